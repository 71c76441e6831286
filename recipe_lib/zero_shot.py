"""Zero-shot evaluation (notebook 02): score an evaluation split with a critic and compare with the labels."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from recipe_lib.config import SamplingSettings, VideoSettings, build_dir, get_profile
from recipe_lib.inference.scoring import ScoreConfig, ScoreResult, score_videos
from recipe_lib.metrics import CoreMetrics, metrics_from_rows


@dataclasses.dataclass
class ZeroShotConfig:
    profile: str = "demo"
    model: str | None = None  # default: the profile's critic
    eval_data: str | None = None  # dataset folder or table; default (demo): the synthetic eval split
    prompt: str = "video_reward"
    mode: Literal["expected", "generate"] = "expected"
    batch_size: int | None = None
    limit: int | None = None
    out_dir: Path | None = None
    video: VideoSettings | None = None
    sampling: SamplingSettings | None = None


@dataclasses.dataclass
class ZeroShotResult:
    scores: ScoreResult
    metrics: CoreMetrics

    def frame(self) -> Any:
        return self.scores.frame()


def run_zero_shot(cfg: ZeroShotConfig, progress: bool = True) -> ZeroShotResult:
    profile = get_profile(cfg.profile)
    model = cfg.model or profile.model
    eval_data = cfg.eval_data
    if cfg.profile == "demo":
        from recipe_lib.data.demo import ensure_demo_data
        from recipe_lib.models.loading import ensure_demo_critic

        if cfg.model is None:
            ensure_demo_critic(Path(model))
        if eval_data is None:
            eval_data = str(ensure_demo_data().eval_dir)
    if eval_data is None:
        from recipe_lib.errors import RecipeError

        raise RecipeError(
            "no evaluation data given for the full profile",
            hint="prepare VideoPhy-2 first (plausibility prepare videophy2 ...) and pass its folder as eval_data",
        )
    score_cfg = ScoreConfig(
        inputs=[eval_data],
        out_dir=cfg.out_dir or build_dir() / "02_zero_shot" / "scores",
        model=model,
        prompt=cfg.prompt,
        mode=cfg.mode,
        video=cfg.video or profile.video,
        sampling=cfg.sampling or profile.sampling,
        batch_size=cfg.batch_size or profile.batch_size,
        device=profile.device if cfg.profile == "demo" else "auto",
        dtype=profile.dtype if cfg.profile == "demo" else "auto",
        limit=cfg.limit,
    )
    scores = score_videos(score_cfg, progress=progress)
    return ZeroShotResult(scores=scores, metrics=metrics_from_rows(scores.rows))
