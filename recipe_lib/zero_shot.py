"""Zero-shot evaluation (notebook 02): score an evaluation split with a critic and compare with the labels."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from recipe_lib.config import SamplingSettings, VideoSettings, build_dir
from recipe_lib.inference.scoring import ScoreConfig, ScoreResult, score_videos
from recipe_lib.metrics import CoreMetrics, metrics_from_rows
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


@dataclasses.dataclass
class ZeroShotResult:
    scores: ScoreResult
    metrics: CoreMetrics

    def frame(self) -> Any:
        return self.scores.frame()


def run_zero_shot(cfg: ZeroShotConfig, progress: bool = True) -> ZeroShotResult:
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
    scores = score_videos(score_cfg, progress=progress)
    return ZeroShotResult(scores=scores, metrics=metrics_from_rows(scores.rows))
