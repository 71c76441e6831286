"""Notebook 03: supervised fine-tuning of the critic on labelled conversations (``plausibility train sft``).

``run_sft(SFTStageConfig) -> StageResult``: in a profile that trains in this process, the critic is trained here and its
checkpoints are swept on the held-out split; in a profile that trains on GPUs, the cosmos-rl config and launch command
are returned (:mod:`recipe_lib.stages.training` says what the two stages share and why the demo's settings are what
they are).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from recipe_lib.profiles import get_profile
from recipe_lib.stages.training import (
    StageConfig,
    StageResult,
    base_metrics,
    before_after,
    planned,
    stage_data,
    stage_out_dir,
    sweep_stage,
    train_stage,
)


@dataclasses.dataclass
class SFTStageConfig(StageConfig):
    """Notebook 03."""


def run_sft(cfg: SFTStageConfig) -> StageResult:
    """Notebook 03's work (see the module docstring)."""
    profile = get_profile(cfg.profile)
    out_dir = Path(cfg.out_dir or stage_out_dir("sft"))
    if not profile.trains_in_process:
        return planned("sft", cfg, profile, out_dir)
    data = stage_data("sft", cfg, profile)
    result = train_stage("sft", cfg, profile, profile.critic(cfg.model), data, out_dir)
    summary = result.summary()
    metrics: dict[str, Any] = {
        **base_metrics(profile, data, result),
        "n_train": sum(data.counts.get("train", {}).values()) or None,
        "n_eval": sum(data.counts.get("eval", {}).values()) or None,
        "eval_label_counts": data.counts.get("eval"),
        "final_dir": str(result.final_dir),
        "loss_first": summary["loss_first"],
        "loss_last": summary["loss_last"],
    }
    sweep = sweep_stage(cfg, profile, out_dir, data)
    if sweep is not None:
        best = sweep.best("accuracy")
        metrics.update(
            before_after(sweep, "untrained", "sft"),
            sft_coverage=sweep.point("final").metrics["coverage"],
            best_step=best.step,
            best_accuracy=best.metrics["accuracy"],
            checkpoints=[p.name for p in sweep.points],
        )
    return StageResult("sft", profile.name, metrics, train=result, sweep=sweep)
