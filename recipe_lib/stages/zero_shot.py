"""Zero-shot evaluation (notebook 02): score an evaluation split with a critic and compare with the labels.

``tasks`` (:mod:`recipe_lib.tasks`) adds semantic adherence (``sa``: the caption in ``caption_column`` against the label
in ``sa_column``) and, when pc and sa are both scored, the joint metric; each task is cached in the same store.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from recipe_lib.config import SamplingSettings, VideoSettings, build_dir
from recipe_lib.evaluation.metrics import CoreMetrics, metrics_from_rows
from recipe_lib.inference.score_config import ScoreConfig, ScoreResult
from recipe_lib.inference.scoring import score_videos
from recipe_lib.profiles import get_profile


@dataclasses.dataclass
class ZeroShotConfig:
    profile: str = "demo"
    model: str | None = None  # default: the profile's critic
    eval_data: str | None = None  # dataset folder or table; default: the profile's eval split with 1-5 labels
    prompt: str = "video_reward"
    mode: Literal["expected", "generate"] = "expected"
    batch_size: int | None = None
    limit: int | None = None
    out_dir: Path | None = None
    video: VideoSettings | None = None  # None: the critic's (recipe_lib.profiles.critic_settings)
    sampling: SamplingSettings | None = None  # None: the critic's
    tasks: tuple[str, ...] = ("pc",)  # pc, sa (rule: see plausibility score/evaluate --task rule)
    caption_column: str = "caption"  # the demo's matching / mismatching captions: sa_caption
    sa_column: str = "sa"  # the demo's: sa_caption_label (5 when the caption is the clip's own, 1 when not)


@dataclasses.dataclass
class ZeroShotResult:
    scores: ScoreResult
    metrics: CoreMetrics
    by_task: dict[str, ScoreResult] = dataclasses.field(default_factory=dict)
    sa_metrics: CoreMetrics | None = None
    joint: Any = None  # recipe_lib.evaluation.metrics.JointSuite when pc and sa are both scored

    def task_summary(self) -> dict[str, Any]:
        """Flat numbers of the tasks beside pc (for ``metrics.json``)."""
        out: dict[str, Any] = {}
        if self.sa_metrics is not None:
            out.update({f"sa_{k}": v for k, v in self.sa_metrics.to_dict().items()})
        if self.joint is not None:
            out.update({k: v for k, v in self.joint.to_dict()["metrics"].items() if k.endswith("joint_rate")})
        return out

    def frame(self) -> Any:
        return self.scores.frame()


def run_zero_shot(cfg: ZeroShotConfig, progress: bool = True) -> ZeroShotResult:
    from recipe_lib.tasks import parse_tasks

    tasks = parse_tasks(list(cfg.tasks))
    if "rule" in tasks or "pc" not in tasks:
        from recipe_lib.errors import ConfigError

        raise ConfigError(
            f"zero-shot scores pc, optionally with sa; got {','.join(tasks)}",
            hint="tasks=('pc',) or ('pc', 'sa'); rule judgements: plausibility score/evaluate --task rule",
        )
    profile = get_profile(cfg.profile)
    score_cfg = ScoreConfig(
        inputs=[profile.eval_data(cfg.eval_data, label_mode="graded")],  # the critic as it comes, vs 1-5
        out_dir=cfg.out_dir or build_dir() / "02_zero_shot" / "scores",
        model=profile.critic(cfg.model),
        prompt=cfg.prompt,
        mode=cfg.mode,
        video=cfg.video,
        sampling=cfg.sampling,
        batch_size=cfg.batch_size or profile.batch_size,
        device=profile.device,
        dtype=profile.dtype,
        limit=cfg.limit,
    )
    sa_cfg = None
    if "sa" in tasks:
        from recipe_lib.stages.score import check_task_inputs
        from recipe_lib.tasks import task_prompt

        sa_cfg = dataclasses.replace(
            score_cfg,
            task="sa",
            prompt=task_prompt("sa", None, cfg.prompt),
            label_column=cfg.sa_column,
            caption_column=cfg.caption_column,
        )
        check_task_inputs({"sa": sa_cfg})  # a missing caption column fails before anything is scored
    scores = score_videos(score_cfg, progress=progress)
    result = ZeroShotResult(scores=scores, metrics=metrics_from_rows(scores.rows), by_task={"pc": scores})
    if sa_cfg is not None:
        from recipe_lib.evaluation.filtering import joint_records
        from recipe_lib.evaluation.metrics import joint_suite

        sa = score_videos(sa_cfg, progress=progress)
        result.by_task["sa"] = sa
        result.sa_metrics = metrics_from_rows(sa.rows, cfg.sa_column)
        records = joint_records(scores.rows, sa.rows, scores.skipped, sa.skipped, "pc", cfg.sa_column)
        result.joint = joint_suite(records)
    return result
