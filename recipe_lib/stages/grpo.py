"""Notebook 04: GRPO of the critic with a reward against the human label (``plausibility train grpo``).

``run_grpo(GRPOStageConfig) -> StageResult``: starts from the SFT stage's final checkpoint (running that stage first
when it is missing), trains, sweeps the checkpoints; a profile that trains on GPUs gets the cosmos-rl config and launch
command instead (:mod:`recipe_lib.stages.training`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from recipe_lib.profiles import get_profile
from recipe_lib.stages.sft import SFTStageConfig, run_sft
from recipe_lib.stages.training import (
    StageConfig,
    StageResult,
    TrainResult,
    base_metrics,
    before_after,
    planned,
    stage_data,
    stage_out_dir,
    sweep_stage,
    train_stage,
)


@dataclasses.dataclass
class GRPOStageConfig(StageConfig):
    """Notebook 04. ``model`` None: the SFT stage's final checkpoint (trained first when missing)."""

    temperature: float | None = None  # shortcut for overrides["train.train_policy.temperature"]
    n_generation: int | None = None  # ... ["rollout.n_generation"]

    def shortcuts(self) -> dict[str, Any]:
        return {
            **super().shortcuts(),
            "train.train_policy.temperature": self.temperature,
            "rollout.n_generation": self.n_generation,
        }


def _gain_se(values: list[float], fraction: float = 0.1) -> float | None:
    """Standard error of (mean of the last tenth - mean of the first tenth) of per-step rewards."""
    import numpy as np

    k = max(1, int(round(len(values) * fraction)))
    if len(values) < 2 * k or k < 2:
        return None
    first, last = np.asarray(values[:k]), np.asarray(values[-k:])
    return float(np.sqrt(first.var(ddof=1) / k + last.var(ddof=1) / k))


def run_grpo(cfg: GRPOStageConfig) -> StageResult:
    """Notebook 04's work (see the module docstring)."""
    profile = get_profile(cfg.profile)
    out_dir = Path(cfg.out_dir or stage_out_dir("grpo"))
    if not profile.trains_in_process:
        return planned("grpo", cfg, profile, out_dir)
    sft = None
    start = cfg.model
    if start is None:
        final = stage_out_dir("sft") / "checkpoints" / "final"
        if not (final / "trainer_state.json").is_file():
            sft = run_sft(
                SFTStageConfig(profile=cfg.profile, label_mode=cfg.label_mode, sweep=False, progress=cfg.progress)
            )
        start = str(final)
    data = stage_data("grpo", cfg, profile)
    result = train_stage("grpo", cfg, profile, start, data, out_dir)
    summary = result.summary()
    reward_gain = None
    if summary.get("reward_first") is not None and summary.get("reward_last") is not None:
        reward_gain = summary["reward_last"] - summary["reward_first"]
    metrics: dict[str, Any] = {
        **base_metrics(profile, data, result),
        "start_model": start,
        "reward_gain": reward_gain,
        "reward_gain_se": _gain_se(result.curve("reward_mean")),
        **{
            k: summary.get(k)
            for k in (
                "reward_first",
                "reward_last",
                "parsed_first",
                "parsed_last",
                "reward_parsed_first",
                "reward_parsed_last",
                "signal_fraction",
                "kl_last",
                "clip_fraction",
            )
        },  # fmt: skip
        "grpo_label_counts": data.counts.get("train"),
    }
    metrics.update(_run_settings_of(result))
    sweep = sweep_stage(cfg, profile, out_dir, data)
    if sweep is not None:
        metrics.update(before_after(sweep, "start", "grpo"))
    return StageResult("grpo", profile.name, metrics, train=result, sweep=sweep, start_model=start, sft=sft)


def _run_settings_of(result: TrainResult) -> dict[str, Any]:
    """The sampling settings GRPO ran with, read back from the run's ``run.json``."""
    import json

    settings = json.loads((result.run_dir / "run.json").read_text())
    return {
        "n_generation": settings["rollout"]["n_generation"],
        "temperature": settings["train"]["train_policy"]["temperature"],
    }
