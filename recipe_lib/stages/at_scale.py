"""Notebook 07: scoring on a Ray cluster gives the same rows as scoring in this process (``plausibility score
--engine ray``).

``run_at_scale(AtScaleConfig) -> AtScaleResult`` starts a local cluster on 127.0.0.1 (or joins ``address``), scores the
profile's evaluation split with ``num_workers`` scoring actors, scores the same clips in this process, and compares
the two row by row (same cache keys, same scores, expected scores within float noise). On a real cluster the same
:class:`~recipe_lib.inference.score_config.ScoreConfig` runs with ``address`` set to the head node.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from recipe_lib.config import build_dir
from recipe_lib.errors import ConfigError
from recipe_lib.inference.ray_engine import start_local_cluster, stop_local_cluster
from recipe_lib.inference.score_config import ScoreConfig, ScoreResult
from recipe_lib.inference.scoring import score_videos
from recipe_lib.profiles import get_profile


@dataclasses.dataclass
class AtScaleConfig:
    profile: str = dataclasses.field(default="demo", metadata={"help": "demo or full"})
    num_workers: int = dataclasses.field(default=2, metadata={"help": "scoring actors, one critic each"})
    num_cpus: int | None = dataclasses.field(default=2, metadata={"help": "CPUs of the local cluster (None: all)"})
    limit: int | None = dataclasses.field(default=16, metadata={"help": "clips to score (None: the whole split)"})
    address: str | None = dataclasses.field(
        default=None, metadata={"help": "a running cluster's head (host:port); None starts a local one"}
    )
    out_dir: Path | None = dataclasses.field(default=None, metadata={"help": "default: build/07_at_scale"})

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ConfigError(f"num_workers must be at least 1, got {self.num_workers}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be at least 1 (or None for every clip), got {self.limit}")


@dataclasses.dataclass
class AtScaleResult:
    on_ray: ScoreResult
    local: ScoreResult
    resources: dict[str, Any]
    same_keys: bool
    same_score: bool
    max_expected_diff: float
    num_workers: int

    def metrics(self) -> dict[str, Any]:
        """What notebook 07 records in ``metrics.json``."""
        return {
            **self.on_ray.summary(),
            "same_keys": self.same_keys,
            "same_score": self.same_score,
            "max_expected_diff": self.max_expected_diff,
            "num_workers": self.num_workers,
        }


def run_at_scale(cfg: AtScaleConfig) -> AtScaleResult:
    """Score the profile's evaluation split on Ray and in this process and compare (see the module docstring)."""
    settings = get_profile(cfg.profile)
    out = Path(cfg.out_dir or build_dir() / "07_at_scale")
    score = ScoreConfig(
        inputs=[settings.eval_data(None, label_mode="graded")],
        out_dir=out / "ray",
        model=settings.critic(None),
        video=settings.video,
        sampling=settings.sampling,
        batch_size=settings.batch_size,
        device=settings.device,
        dtype=settings.dtype,
        limit=cfg.limit,
        engine="ray",
        address=cfg.address,
        num_workers=cfg.num_workers,
    )
    started = cfg.address is None
    resources = start_local_cluster(num_cpus=cfg.num_cpus) if started else {}
    try:
        on_ray = score_videos(score, progress=False)
    finally:
        if started:
            stop_local_cluster()
    local = score_videos(
        dataclasses.replace(score, engine="local", address=None, out_dir=out / "local"), progress=False
    )
    by_key = {r["key"]: r for r in local.rows}
    common = [r for r in on_ray.rows if r["key"] in by_key]
    return AtScaleResult(
        on_ray=on_ray,
        local=local,
        resources=resources,
        same_keys=set(by_key) == {r["key"] for r in on_ray.rows},
        same_score=all(r["score"] == by_key[r["key"]]["score"] for r in common),
        max_expected_diff=max(
            (abs(r["expected_score"] - by_key[r["key"]]["expected_score"]) for r in common), default=0.0
        ),
        num_workers=cfg.num_workers,
    )
