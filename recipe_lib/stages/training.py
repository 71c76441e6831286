"""What the training stages of notebooks 03 (:mod:`recipe_lib.stages.sft`) and 04 (:mod:`recipe_lib.stages.grpo`)
share: the config fields, the result, the data, training, checkpoint sweep and launch plan.

A profile that trains in this process (``demo``: CPU, minutes)
    The critic is trained here on the profile's conversations (demo: :func:`recipe_lib.demo.prepare_demo_conversations`
    — binary labels, the compact prompt) with ``configs/<profile>/{sft,grpo}.toml``. Choices that make a from-scratch
    0.8 M-parameter critic learn on a 2-core CPU within minutes (measured; see the configs' comments): binary labels,
    **balanced batches** of 32 (``[local] batch_order = "balanced"``: random batches of 16 made the critic swing between
    answering only 1 and only 5) and the compact prompt (:mod:`recipe_lib.demo`). Accuracy is measured on the shared
    held-out split with the same labels, against the untrained critic (step 0 of the sweep) and the majority class.

    GRPO starts from the SFT stage's final checkpoint (``build/03_sft/checkpoints/final``); when it is missing the SFT
    stage runs first with its defaults, because an untrained critic never writes a parsable answer, so every reward
    is 0 and no group carries signal. Its prompts are the label-balanced training clips with the SFT prompt (a
    0.8 M-parameter model cannot reason in ``<think>`` blocks), sampled at temperature 1.5: at 1.0 the SFT critic's
    groups mostly agree on its own training clips and the reward stays flat.

A profile that trains on GPUs (``full``)
    Nothing is trained here: the cosmos-rl config for Cosmos-Reason1-7B on ``n_gpus`` GPUs is rendered from
    ``configs/full/{sft,grpo}.toml`` (:func:`recipe_lib.train.cosmos.write_config`), checked with cosmos-rl's own
    schema, and the launch command is returned (with what this machine lacks to run it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from recipe_lib.config import CONFIGS_DIR, apply_overrides, build_dir, load_toml, resolve_path
from recipe_lib.errors import RecipeError
from recipe_lib.profiles import Profile
from recipe_lib.train.config import training_config
from recipe_lib.train.loop import TrainResult
from recipe_lib.train.sweep import SweepConfig, SweepResult, sweep_checkpoints

STAGE_DIRS = {"sft": "03_sft", "grpo": "04_rl_grpo"}


@dataclasses.dataclass
class StageConfig:
    """What notebooks 03 and 04 share. ``overrides``: dotted TOML keys applied to ``config``
    (``{"local.max_steps": 50}``); ``max_steps`` is a shortcut for ``overrides["local.max_steps"]``.

    ``dataset`` / ``eval_dataset``: conversation datasets (default: the profile's, the demo's conversations);
    ``model``: the critic to start from (default: the profile's); ``label_mode`` None: the profile's."""

    profile: str = "demo"
    config: str | None = None  # default: configs/<profile>/<kind>.toml
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    max_steps: int | None = None
    label_mode: str | None = None
    out_dir: Path | None = None  # default: build/03_sft, build/04_rl_grpo (the final checkpoint: checkpoints/final)
    sweep: bool = True
    progress: bool = True
    model: str | None = None
    dataset: str | None = None
    eval_dataset: str | None = None
    n_gpus: int = 8  # profiles that train on GPUs

    def shortcuts(self) -> dict[str, Any]:
        return {"local.max_steps": self.max_steps}


@dataclasses.dataclass
class LaunchPlan:
    """A rendered cosmos-rl config and the command that runs it."""

    config_path: Path
    command: str
    missing: list[str]

    def describe(self) -> str:
        lines = [f"config:  {self.config_path}", f"command: {self.command}"]
        if self.missing:
            lines.append("this machine lacks: " + "; ".join(self.missing))
        return "\n".join(lines)


_REPORT_KEYS = {
    "sft": (
        "label_mode", "n_train", "n_eval", "steps", "train_seconds_now", "loss_first", "loss_last",
        "majority_accuracy", "untrained_accuracy", "sft_accuracy", "untrained_pearson", "sft_pearson", "best_step",
        "best_accuracy", "final_dir",
    ),
    "grpo": (
        "start_model", "steps", "train_seconds_now", "n_generation", "temperature", "reward_first", "reward_last",
        "reward_gain", "reward_gain_se", "parsed_first", "parsed_last", "reward_parsed_first", "reward_parsed_last",
        "signal_fraction", "kl_last", "clip_fraction", "majority_accuracy",
        "start_accuracy", "grpo_accuracy", "start_pearson", "grpo_pearson",
    ),
}  # fmt: skip
_SWEEP_TITLES = {
    "sft": "SFT checkpoints on the held-out split",
    "grpo": "GRPO checkpoints on the held-out split (step 0: the SFT checkpoint it starts from)",
}


@dataclasses.dataclass
class StageResult:
    """What notebooks 03/04 show of a stage; for a profile that trains on GPUs every view says nothing ran here."""

    kind: str
    profile: str
    metrics: dict[str, Any]
    train: TrainResult | None = None
    sweep: SweepResult | None = None
    plan: LaunchPlan | None = None
    start_model: str | None = None
    sft: StageResult | None = None  # GRPO: the SFT stage it had to run first

    @property
    def final_dir(self) -> Path | None:
        return self.train.final_dir if self.train is not None else None

    def report(self) -> str:
        if self.plan is not None:
            return "nothing is trained in this process for this profile; launch cosmos-rl:\n" + self.plan.describe()
        keys = [k for k in _REPORT_KEYS[self.kind] if self.metrics.get(k) is not None]
        width = max(len(k) for k in keys)
        return "\n".join(f"{k.ljust(width)}  {_fmt(self.metrics[k])}" for k in keys)

    def training_figure(self):  # noqa: ANN201 - Figure or a note
        from recipe_lib.train.plots import plot_grpo_history, plot_sft_history

        if self.train is None:
            return "nothing trained in this process"
        if self.kind == "grpo":
            return plot_grpo_history(self.train.history, title="GRPO of the demo critic")
        return plot_sft_history(self.train.history, self.train.evals, title="SFT of the demo critic")

    def sweep_figure(self):  # noqa: ANN201 - Figure or a note
        from recipe_lib.train.sweep import plot_sweep

        if self.sweep is None:
            return (
                "no checkpoint sweep in this profile (cosmos-rl writes the checkpoints; sweep them with "
                "`plausibility sweep RUN_DIR --data EVAL` afterwards)"
            )
        return plot_sweep(self.sweep, title=_SWEEP_TITLES[self.kind])

    def sweep_table(self):  # noqa: ANN201 - DataFrame or a note
        if self.sweep is None:
            return "no checkpoint sweep in this profile"
        frame = self.sweep.frame()
        cols = ["step", "checkpoint", "accuracy", "pearson", "majority_accuracy", "coverage", "n"]
        return frame[[c for c in cols if c in frame.columns]]

    def final_scores(self):  # noqa: ANN201 - DataFrame of the final checkpoint's scores (or None)
        import pandas as pd

        if self.sweep is None:
            return None
        path = self.sweep.out_dir / "final" / "scores.csv"
        return pd.read_csv(path) if path.exists() else None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


@dataclasses.dataclass
class StageData:
    """The conversation datasets a stage trains and evaluates on, and their label counts."""

    train: str
    eval: str | None
    label_mode: str
    counts: dict[str, dict[str, int]]


def stage_data(kind: str, cfg: StageConfig, profile: Profile) -> StageData:
    label_mode = cfg.label_mode or profile.label_mode
    if cfg.dataset:
        return StageData(cfg.dataset, cfg.eval_dataset, label_mode, {})
    from recipe_lib.demo import prepare_demo_conversations

    data = prepare_demo_conversations(label_mode)
    train = data.grpo_train if kind == "grpo" else data.sft_train
    counts = {"train": data.counts["grpo_train" if kind == "grpo" else "sft_train"], "eval": data.counts["eval"]}
    return StageData(str(train), str(data.sft_eval), label_mode, counts)


def planned(kind: str, cfg: StageConfig, profile: Profile, out_dir: Path) -> StageResult:
    """A profile that trains on GPUs: the cosmos-rl config and launch command, nothing trained here."""
    plan = launch_plan(kind, cfg, out_dir, cfg.model)
    metrics = {"profile": profile.name, "n_gpus": cfg.n_gpus, "command": plan.command}
    return StageResult(kind, profile.name, metrics, plan=plan)


def launch_plan(kind: str, cfg: StageConfig, out_dir: Path, model: str | None) -> LaunchPlan:
    from recipe_lib.train import cosmos

    if cfg.dataset is None:
        raise RecipeError(
            f"this profile trains with cosmos-rl and needs a conversation dataset for {kind.upper()}",
            hint="prepare VideoPhy-2 conversations (plausibility prepare conversations) and pass dataset=<folder>",
        )
    path = cosmos.write_config(
        out_dir / "cosmos", kind, model=model, dataset=cfg.dataset, n_gpus=cfg.n_gpus,
        eval_dataset=cfg.eval_dataset if kind == "sft" else None, output_dir=out_dir / "outputs",
    )  # fmt: skip
    launch = cosmos.launch(path, dry_run=True)
    missing = cosmos.check_prerequisites(kind, cfg.n_gpus).missing
    return LaunchPlan(path, launch.command_line, missing)


def train_stage(
    kind: str, cfg: StageConfig, profile: Profile, start: str, data: StageData, out_dir: Path
) -> TrainResult:
    fixed = {
        "policy.model_name_or_path": start,
        "train.output_dir": str(out_dir),
        "custom.dataset.path": data.train,
    }
    if data.eval:
        fixed["custom.eval_dataset.path"] = data.eval
    path = resolve_path(cfg.config) if cfg.config else CONFIGS_DIR / profile.configs / f"{kind}.toml"
    overrides = {**{k: v for k, v in cfg.shortcuts().items() if v is not None}, **cfg.overrides}
    mapping = apply_overrides(apply_overrides(load_toml(path), fixed), overrides)
    train_cfg = training_config(mapping, kind)
    if kind == "grpo":
        from recipe_lib.train.grpo import train_grpo

        return train_grpo(train_cfg, progress=cfg.progress, restart="changed")
    from recipe_lib.train.sft import train_sft

    return train_sft(train_cfg, progress=cfg.progress, restart="changed")


def sweep_stage(cfg: StageConfig, profile: Profile, out_dir: Path, data: StageData) -> SweepResult | None:
    if not cfg.sweep or not data.eval:
        return None
    return sweep_checkpoints(
        SweepConfig(run_dir=out_dir, eval_data=data.eval, prompt=profile.prompt, profile=profile.name, batch_size=40),
        progress=cfg.progress,
    )


def before_after(sweep: SweepResult, before: str, after: str) -> dict[str, Any]:
    """Accuracy and Pearson of the starting model (``<before>_*``) and the final checkpoint (``<after>_*``), with the
    majority-class baseline, on the swept eval split."""
    start, final = sweep.point("start").metrics, sweep.point("final").metrics
    return {
        f"{before}_accuracy": start["accuracy"],
        f"{after}_accuracy": final["accuracy"],
        "majority_accuracy": sweep.majority_accuracy(),
        f"{before}_pearson": start["pearson"],
        f"{after}_pearson": final["pearson"],
    }


def base_metrics(profile: Profile, data: StageData, result: TrainResult) -> dict[str, Any]:
    return {
        "profile": profile.name,
        "label_mode": data.label_mode,
        "steps": result.steps,
        "train_seconds_now": round(result.seconds, 1),
    }


def stage_out_dir(kind: str) -> Path:
    """Where a training stage writes by default: ``build/03_sft`` or ``build/04_rl_grpo``."""
    return build_dir() / STAGE_DIRS[kind]
