"""Notebook 05's training and evaluation: fine-tune a critic on a team's own prepared labels and measure it on their
eval split, before and after.

A profile that trains in process (``demo``): SFT of the profile's critic on CPU (``configs/demo/sft.toml`` with the
team's conversations and a short run), then the untrained and the fine-tuned critic evaluated side by side with the
full metric suite and report, with the profile's prompt (the one the conversations were written with).
A profile that trains on GPUs (``full``): nothing trains here: the cosmos-rl ``custom_sft`` config is rendered for
the team's data (evaluates and saves every 50 steps, keeps 5) and the launch command is returned, with what this
machine lacks to run it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from recipe_lib.config import CONFIGS_DIR, apply_overrides, build_dir, load_toml
from recipe_lib.constants import DEFAULT_THRESHOLD
from recipe_lib.profiles import get_profile


@dataclasses.dataclass
class CustomTrainConfig:
    train_conversations: Path
    eval_conversations: Path
    eval_data: Path  # the prepared eval split (clips with labels), scored by the evaluation
    profile: str = "demo"
    out_dir: Path | None = None  # default: build/05_custom_dataset
    max_steps: int = 30
    model: str | None = None  # start checkpoint; demo default: the embedded tiny critic
    n_gpus: int = 8
    threshold: float = DEFAULT_THRESHOLD
    progress: bool = True


@dataclasses.dataclass
class CustomTrainResult:
    profile: str
    metrics: dict[str, Any]
    train: Any = None  # recipe_lib.train.loop.TrainResult
    evaluation: Any = None  # recipe_lib.stages.evaluate.EvalResult
    command: str | None = None
    missing: list[str] = dataclasses.field(default_factory=list)

    def report(self) -> str:
        if self.command is not None:
            lines = [f"command: {self.command}"]
            if self.missing:
                lines.append("this machine lacks: " + "; ".join(self.missing))
            return "\n".join(lines)
        m = self.metrics
        return (
            f"SFT: {m['steps']} steps, loss {m['loss_first']:.3f} -> {m['loss_last']:.3f}\n"
            f"eval accuracy: untrained {m['untrained_accuracy']:.3f}, fine-tuned {m['finetuned_accuracy']:.3f} "
            f"(majority baseline {m['majority_accuracy']:.3f}, n={m['n_eval']})"
        )


def run_custom_data(cfg: CustomTrainConfig) -> CustomTrainResult:
    profile = get_profile(cfg.profile)
    out_dir = Path(cfg.out_dir or build_dir() / "05_custom_dataset")
    if not profile.trains_in_process:
        from recipe_lib.train.cosmos import check_prerequisites, launch, write_config

        path = write_config(
            out_dir / "cosmos" / f"custom_sft_{cfg.n_gpus}gpu.toml",
            "custom_sft",
            model=profile.critic(cfg.model),
            dataset=cfg.train_conversations,
            n_gpus=cfg.n_gpus,
            eval_dataset=cfg.eval_conversations,
        )
        plan = launch(path, dry_run=True)
        missing = list(check_prerequisites(kind="sft", n_gpus=cfg.n_gpus).missing)
        command = plan.command_line
        metrics = {"profile": profile.name, "config": str(path), "command": command}
        return CustomTrainResult(profile.name, metrics, command=command, missing=missing)

    from recipe_lib.evaluation.metrics import metrics_from_rows
    from recipe_lib.stages.evaluate import EvalConfig, run_evaluate
    from recipe_lib.train.config import training_config
    from recipe_lib.train.sft import train_sft

    start = profile.critic(cfg.model)
    mapping = apply_overrides(
        load_toml(CONFIGS_DIR / profile.configs / "sft.toml"),
        {
            "policy.model_name_or_path": start,
            "train.output_dir": str(out_dir / "sft"),
            "custom.dataset.path": str(cfg.train_conversations),
            "custom.eval_dataset.path": str(cfg.eval_conversations),
            "local.max_steps": cfg.max_steps,
        },
    )
    result = train_sft(training_config(mapping, "sft"), progress=cfg.progress, restart="changed")
    evaluation = run_evaluate(
        EvalConfig(
            critics={"untrained": start, "fine-tuned": str(result.final_dir)},
            eval_data=str(cfg.eval_data),
            profile=profile.name,
            threshold=cfg.threshold,
            out_dir=out_dir / "evaluation",
        )
    )
    per = evaluation.summary()
    base = metrics_from_rows(evaluation.scores["untrained"].rows)
    train_summary = result.summary()
    metrics = {
        "profile": profile.name,
        "steps": result.steps,
        "loss_first": train_summary["loss_first"],
        "loss_last": train_summary["loss_last"],
        "untrained_accuracy": per["untrained"]["accuracy"],
        "finetuned_accuracy": per["fine-tuned"]["accuracy"],
        "finetuned_f1": per["fine-tuned"].get("f1"),
        "majority_accuracy": base.majority_accuracy,
        "n_eval": base.n,
        "final_dir": str(result.final_dir),
        "report": str(evaluation.report.html),
    }
    return CustomTrainResult(profile.name, metrics, train=result, evaluation=evaluation)
