"""The training stages of notebooks 03 (SFT) and 04 (GRPO): data, baseline, training, checkpoint sweep, metrics.

``run_sft_stage(SFTStageConfig) -> SFTStageResult`` and ``run_grpo_stage(GRPOStageConfig) -> GRPOStageResult``.

``demo`` profile (CPU, minutes)
    The tiny critic is trained in this process on the synthetic clips of :func:`recipe_lib.data.demo.ensure_demo_data`
    with ``configs/demo/{sft,grpo}.toml``. Choices that make a from-scratch 0.8 M-parameter critic learn on a 2-core
    CPU within minutes (measured; see the configs' comments):

    * **binary labels** by default: ``pc >= 4`` becomes 5 ("plausible"), anything lower 1 ("implausible") — the
      good-vs-bad threshold of the metrics and what ``--scale_labels`` makes of 0/1 labels for custom data. The critic
      learns to tell violations from plausible motion in a few hundred steps, not the 1-5 grading of severity and onset
      (``label_mode="graded"`` keeps the 1-5 labels);
    * **balanced batches** of 32 (``[local] batch_order = "balanced"``): random batches of 16 made the critic swing
      between answering only 1 and only 5;
    * the **compact prompt** (:data:`DEMO_PROMPT`): the rubric of ``video_reward`` is ~450 tokens that are the same for
      every clip and only cost time (2.3x per step) for a model trained from scratch.

    Accuracy is measured on the shared held-out split with the same labels, against the untrained critic (step 0 of
    the sweep) and the majority class.

    GRPO starts from the SFT stage's final checkpoint (``build/03_sft/checkpoints/final``); when it is missing the SFT
    stage runs first with its defaults, because an untrained critic never writes a parsable answer, so every reward
    is 0 and no group carries signal. Its prompts are the label-balanced training clips with the SFT prompt (a
    0.8 M-parameter model cannot reason in ``<think>`` blocks), sampled at temperature 1.5: at 1.0 the SFT critic's
    groups mostly agree on its own training clips and the reward stays flat.

``full`` profile (GPUs)
    Nothing is trained here: the cosmos-rl config for Cosmos-Reason1-7B on ``n_gpus`` GPUs is rendered from
    ``configs/full/{sft,grpo}.toml`` (:func:`recipe_lib.train.cosmos.write_config`), checked with cosmos-rl's own
    schema, and the launch command is returned (with what this machine lacks to run it).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Literal

from recipe_lib.config import CONFIGS_DIR, build_dir, get_profile, load_toml
from recipe_lib.errors import ConfigError, RecipeError
from recipe_lib.metrics import DEFAULT_THRESHOLD
from recipe_lib.train.common import apply_overrides, resolve_path, training_config
from recipe_lib.train.sweep import SweepConfig, SweepResult, sweep_checkpoints

LabelMode = Literal["binary", "graded"]
CONVERSATIONS_DIR = "data/conversations"

# The demo's prompt: video_reward's task and answer format without its rubric. The rubric is ~450 tokens of text that
# is the same for every clip; for a critic trained from scratch on a CPU it only costs time (a step takes 2.3x longer
# with it), so the demo trains and scores with this one. It ships as prompts/video_reward_compact.yaml; a checkout
# without that file gets the same text written under build/prompts.
DEMO_PROMPT = "video_reward_compact"
DEMO_PROMPT_YAML = """\
# Compact scoring prompt: video_reward's question and answer format without the rubric (the demo critic's prompt).
system_prompt: |
  You judge whether videos obey the laws of physics. Score the video from 1 (physically impossible) to 5 (fully
  realistic) and reply with the score alone, in exactly this form:
  <answer>
  N
  </answer>
user_prompt: |
  Does this video follow the laws of physics?
"""


def demo_prompt() -> str:
    """The demo prompt: ``prompts/video_reward_compact.yaml``, else the same text written under ``build/prompts``."""
    from recipe_lib.config import PROMPTS_DIR

    shipped = PROMPTS_DIR / f"{DEMO_PROMPT}.yaml"
    if shipped.is_file():
        return str(shipped)
    path = build_dir() / "prompts" / f"{DEMO_PROMPT}.yaml"
    if not path.is_file() or path.read_text() != DEMO_PROMPT_YAML:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(DEMO_PROMPT_YAML)
        os.replace(tmp, path)
    return str(path)


# ---------------------------------------------------------------------------------------------------------------------
# demo data


@dataclasses.dataclass
class DemoConversations:
    """Conversation datasets built from the demo clips (see the module docstring for the labels)."""

    sft_train: Path
    sft_eval: Path
    grpo_train: Path
    label_mode: str
    counts: dict[str, dict[str, int]]


def binary_labels(ds: Any, threshold: float = DEFAULT_THRESHOLD, column: str = "pc") -> Any:
    """``pc >= threshold`` -> 5, else 1; the 1-5 label is kept in ``pc_graded``."""
    return ds.map(
        lambda row: {f"{column}_graded": row[column], column: 5 if row[column] >= threshold else 1},
        desc=None,
    )


def _counts(values: list[int]) -> dict[str, int]:
    from collections import Counter

    c = Counter(int(v) for v in values)
    return {str(k): c[k] for k in sorted(c)}


def prepare_demo_conversations(label_mode: LabelMode = "binary", root: Path | None = None) -> DemoConversations:
    """Write the demo conversation datasets (SFT train/eval, label-balanced GRPO train) under
    ``build/data/conversations`` — the paths ``configs/demo/*.toml`` name — unless they are already there."""
    import datasets

    from recipe_lib.data.conversations import save_conversations, to_conversations
    from recipe_lib.data.demo import ensure_demo_data
    from recipe_lib.data.splits import balance_labels

    if label_mode not in ("binary", "graded"):
        raise ConfigError(f"unknown label_mode '{label_mode}'", hint="use 'binary' or 'graded'")
    data = ensure_demo_data()
    root = Path(root or build_dir() / CONVERSATIONS_DIR)
    sft_train, sft_eval, grpo_train = root / "sft" / "train", root / "sft" / "eval", root / "grpo" / "train"
    profile = get_profile("demo")
    prompt = demo_prompt()
    from recipe_lib.prompts import load_prompt

    marker_data = {
        "label_mode": label_mode,
        "prompt": load_prompt(prompt).digest(),
        "demo": json.loads((data.root / "demo_data.json").read_text()),
        "demo_root": str(data.root),
        "video": dataclasses.asdict(profile.video),
        "threshold": DEFAULT_THRESHOLD,
        "version": 1,
    }
    marker = root / "demo_conversations.json"
    if marker.exists() and all(p.exists() for p in (sft_train, sft_eval, grpo_train)):
        saved = json.loads(marker.read_text())
        if saved.get("key") == marker_data:
            return DemoConversations(sft_train, sft_eval, grpo_train, label_mode, saved["counts"])
    train = datasets.load_from_disk(str(data.train_dir))
    evaluation = datasets.load_from_disk(str(data.eval_dir))
    if label_mode == "binary":
        train, evaluation = binary_labels(train), binary_labels(evaluation)
    kwargs = {"prompt": prompt, "video": profile.video}
    save_conversations(to_conversations(train, "sft", **kwargs), sft_train)
    save_conversations(to_conversations(evaluation, "sft", **kwargs), sft_eval)
    balanced, report = balance_labels(train, seed=42)
    save_conversations(to_conversations(balanced, "grpo", **kwargs), grpo_train)
    counts = {
        "sft_train": _counts(train["pc"]),
        "eval": _counts(evaluation["pc"]),
        "grpo_train": {str(k): v for k, v in report.after.items()},
    }
    tmp = marker.with_name(".demo_conversations.json.tmp")
    tmp.write_text(json.dumps({"key": marker_data, "counts": counts}, indent=2))
    os.replace(tmp, marker)
    return DemoConversations(sft_train, sft_eval, grpo_train, label_mode, counts)


# ---------------------------------------------------------------------------------------------------------------------
# SFT


@dataclasses.dataclass
class SFTStageConfig:
    """Notebook 03. ``overrides``: dotted TOML keys applied to ``config`` (``{"local.max_steps": 50}``)."""

    profile: str = "demo"
    config: str | None = None  # default: configs/<demo|full>/sft.toml
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    max_steps: int | None = None  # shortcut for overrides["local.max_steps"]
    label_mode: LabelMode = "binary"
    out_dir: Path | None = None  # default: build/03_sft (the final checkpoint lands in <out_dir>/checkpoints/final)
    sweep: bool = True
    progress: bool = True
    # full profile
    model: str | None = None
    dataset: str | None = None
    eval_dataset: str | None = None
    n_gpus: int = 8


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


class _StageViews:
    """What the notebooks show of a stage result; in the ``full`` profile every view says that nothing ran here."""

    profile: str
    metrics: dict[str, Any]
    train: Any | None
    sweep: SweepResult | None
    plan: LaunchPlan | None

    def report(self) -> str:
        if self.plan is not None:
            return "nothing is trained in this process for the full profile; launch cosmos-rl:\n" + self.plan.describe()
        keys = [k for k in self._report_keys if self.metrics.get(k) is not None]
        width = max(len(k) for k in keys)
        return "\n".join(f"{k.ljust(width)}  {_fmt(self.metrics[k])}" for k in keys)

    def sweep_figure(self):  # noqa: ANN201 - Figure or a note
        from recipe_lib.train.sweep import plot_sweep

        if self.sweep is None:
            return (
                "no checkpoint sweep in this profile (cosmos-rl writes the checkpoints; sweep them with "
                "`plausibility sweep RUN_DIR --data EVAL` afterwards)"
            )
        return plot_sweep(self.sweep, title=self._sweep_title)

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
class SFTStageResult(_StageViews):
    profile: str
    metrics: dict[str, Any]
    train: Any | None = None  # recipe_lib.train.sft.SFTResult
    sweep: SweepResult | None = None
    data: DemoConversations | None = None
    plan: LaunchPlan | None = None

    _report_keys = (
        "label_mode", "n_train", "n_eval", "steps", "train_seconds_now", "loss_first", "loss_last",
        "majority_accuracy", "untrained_accuracy", "sft_accuracy", "untrained_pearson", "sft_pearson", "best_step",
        "best_accuracy", "final_dir",
    )  # fmt: skip
    _sweep_title = "SFT checkpoints on the held-out split"

    @property
    def final_dir(self) -> Path | None:
        return self.train.final_dir if self.train is not None else None

    def training_figure(self):  # noqa: ANN201 - Figure or a note
        from recipe_lib.train.plots import plot_sft_history

        if self.train is None:
            return "nothing trained in this process"
        return plot_sft_history(self.train.history, self.train.evals, title="SFT of the demo critic")


def sft_out_dir() -> Path:
    return build_dir() / "03_sft"


def grpo_out_dir() -> Path:
    return build_dir() / "04_rl_grpo"


def _demo_mapping(kind: str, config: str | None, overrides: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    path = resolve_path(config) if config else CONFIGS_DIR / "demo" / f"{kind}.toml"
    mapping = apply_overrides(load_toml(path), fixed)
    return apply_overrides(mapping, overrides)


def _plan(kind: str, out_dir: Path, model: str | None, dataset: str | None, eval_dataset: str | None, gpus: int):
    from recipe_lib.train import cosmos

    if dataset is None:
        raise RecipeError(
            f"the full profile needs a conversation dataset for {kind.upper()}",
            hint="prepare VideoPhy-2 conversations (recipe_lib.data.conversations) and pass dataset=<folder>",
        )
    path = cosmos.write_config(
        out_dir / "cosmos", kind, model=model, dataset=dataset, n_gpus=gpus, eval_dataset=eval_dataset,
        output_dir=out_dir / "outputs",
    )  # fmt: skip
    launch = cosmos.launch(path, dry_run=True)
    missing = cosmos.check_prerequisites(kind, gpus).missing
    return LaunchPlan(path, launch.command_line, missing)


def _majority(sweep: SweepResult) -> float | None:
    return sweep.points[0].metrics.get("majority_accuracy") if sweep.points else None


def run_sft_stage(cfg: SFTStageConfig) -> SFTStageResult:
    """Notebook 03's work (see the module docstring)."""
    from recipe_lib.train.sft import train_sft

    out_dir = Path(cfg.out_dir or sft_out_dir())
    if cfg.profile == "full":
        plan = _plan("sft", out_dir, cfg.model, cfg.dataset, cfg.eval_dataset, cfg.n_gpus)
        return SFTStageResult("full", {"profile": "full", "n_gpus": cfg.n_gpus, "command": plan.command}, plan=plan)
    if cfg.profile != "demo":
        raise ConfigError(f"unknown profile '{cfg.profile}'", hint="use 'demo' or 'full'")
    from recipe_lib.models.loading import ensure_demo_critic

    critic = ensure_demo_critic()
    data = prepare_demo_conversations(cfg.label_mode)
    fixed = {
        "policy.model_name_or_path": str(critic),
        "train.output_dir": str(out_dir),
        "custom.dataset.path": str(data.sft_train),
        "custom.eval_dataset.path": str(data.sft_eval),
    }
    overrides = dict(cfg.overrides)
    if cfg.max_steps is not None:
        overrides["local.max_steps"] = cfg.max_steps
    mapping = _demo_mapping("sft", cfg.config, overrides, fixed)
    train_cfg = training_config(mapping, "sft")
    result = train_sft(train_cfg, progress=cfg.progress, restart="changed")
    sweep = None
    metrics: dict[str, Any] = {
        "profile": "demo",
        "label_mode": cfg.label_mode,
        "steps": result.steps,
        "train_seconds_now": round(result.seconds, 1),
        "n_train": sum(data.counts["sft_train"].values()),
        "n_eval": sum(data.counts["eval"].values()),
        "eval_label_counts": data.counts["eval"],
        "final_dir": str(result.final_dir),
        **{k: v for k, v in result.summary().items() if k in ("loss_first", "loss_last")},
    }
    if cfg.sweep:
        sweep = sweep_checkpoints(
            SweepConfig(run_dir=out_dir, eval_data=str(data.sft_eval), prompt=demo_prompt(), batch_size=40),
            progress=cfg.progress,
        )
        start, final = sweep.point("start").metrics, sweep.point("final").metrics
        best = sweep.best("accuracy")
        metrics.update(
            untrained_accuracy=start["accuracy"],
            sft_accuracy=final["accuracy"],
            majority_accuracy=_majority(sweep),
            untrained_pearson=start["pearson"],
            sft_pearson=final["pearson"],
            sft_coverage=final["coverage"],
            best_step=best.step,
            best_accuracy=best.metrics["accuracy"],
            checkpoints=[p.name for p in sweep.points],
        )
    return SFTStageResult("demo", metrics, train=result, sweep=sweep, data=data)


# ---------------------------------------------------------------------------------------------------------------------
# GRPO


@dataclasses.dataclass
class GRPOStageConfig:
    """Notebook 04. ``start_model`` None: the SFT stage's final checkpoint (trained first when missing)."""

    profile: str = "demo"
    config: str | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    max_steps: int | None = None  # shortcuts for overrides["local.max_steps"], ...
    temperature: float | None = None  # ... ["train.train_policy.temperature"]
    n_generation: int | None = None  # ... ["rollout.n_generation"]
    label_mode: LabelMode = "binary"
    start_model: str | None = None
    out_dir: Path | None = None  # default: build/04_rl_grpo
    sweep: bool = True
    progress: bool = True
    # full profile
    model: str | None = None
    dataset: str | None = None
    n_gpus: int = 8


@dataclasses.dataclass
class GRPOStageResult(_StageViews):
    profile: str
    metrics: dict[str, Any]
    train: Any | None = None  # recipe_lib.train.grpo.GRPOResult
    sweep: SweepResult | None = None
    start_model: str | None = None
    sft: SFTStageResult | None = None
    plan: LaunchPlan | None = None

    _report_keys = (
        "start_model", "steps", "train_seconds_now", "n_generation", "temperature", "reward_first", "reward_last",
        "reward_gain", "reward_gain_se", "parsed_first", "parsed_last", "reward_parsed_first", "reward_parsed_last",
        "signal_fraction", "kl_last", "clip_fraction", "majority_accuracy",
        "start_accuracy", "grpo_accuracy", "start_pearson", "grpo_pearson",
    )  # fmt: skip
    _sweep_title = "GRPO checkpoints on the held-out split (step 0: the SFT checkpoint it starts from)"

    def training_figure(self):  # noqa: ANN201 - Figure or a note
        from recipe_lib.train.plots import plot_grpo_history

        if self.train is None:
            return "nothing trained in this process"
        return plot_grpo_history(self.train.history, title="GRPO of the demo critic")


def _gain_se(values: list[float], fraction: float = 0.1) -> float | None:
    """Standard error of (mean of the last tenth - mean of the first tenth) of per-step rewards."""
    import numpy as np

    k = max(1, int(round(len(values) * fraction)))
    if len(values) < 2 * k or k < 2:
        return None
    first, last = np.asarray(values[:k]), np.asarray(values[-k:])
    return float(np.sqrt(first.var(ddof=1) / k + last.var(ddof=1) / k))


def run_grpo_stage(cfg: GRPOStageConfig) -> GRPOStageResult:
    """Notebook 04's work (see the module docstring)."""
    from recipe_lib.train.grpo import train_grpo

    out_dir = Path(cfg.out_dir or grpo_out_dir())
    if cfg.profile == "full":
        plan = _plan("grpo", out_dir, cfg.model, cfg.dataset, None, cfg.n_gpus)
        return GRPOStageResult("full", {"profile": "full", "n_gpus": cfg.n_gpus, "command": plan.command}, plan=plan)
    if cfg.profile != "demo":
        raise ConfigError(f"unknown profile '{cfg.profile}'", hint="use 'demo' or 'full'")
    sft = None
    start = cfg.start_model
    if start is None:
        final = sft_out_dir() / "checkpoints" / "final"
        if not (final / "trainer_state.json").is_file():
            sft = run_sft_stage(SFTStageConfig(label_mode=cfg.label_mode, sweep=False, progress=cfg.progress))
        start = str(final)
    data = prepare_demo_conversations(cfg.label_mode)
    fixed = {
        "policy.model_name_or_path": start,
        "train.output_dir": str(out_dir),
        "custom.dataset.path": str(data.grpo_train),
        "custom.eval_dataset.path": str(data.sft_eval),
    }
    overrides = dict(cfg.overrides)
    for key, value in (
        ("local.max_steps", cfg.max_steps),
        ("train.train_policy.temperature", cfg.temperature),
        ("rollout.n_generation", cfg.n_generation),
    ):
        if value is not None:
            overrides[key] = value
    mapping = _demo_mapping("grpo", cfg.config, overrides, fixed)
    train_cfg = training_config(mapping, "grpo")
    result = train_grpo(train_cfg, progress=cfg.progress, restart="changed")
    summary = result.summary()
    metrics: dict[str, Any] = {
        "profile": "demo",
        "label_mode": cfg.label_mode,
        "start_model": start,
        "steps": result.steps,
        "train_seconds_now": round(result.seconds, 1),
        "reward_first": summary["reward_first"],
        "reward_last": summary["reward_last"],
        "reward_gain": (
            summary["reward_last"] - summary["reward_first"]
            if summary["reward_first"] is not None and summary["reward_last"] is not None
            else None
        ),
        "reward_gain_se": _gain_se(result.curve("reward_mean")),
        "parsed_first": summary["parsed_first"],
        "parsed_last": summary["parsed_last"],
        "reward_parsed_first": summary["reward_parsed_first"],
        "reward_parsed_last": summary["reward_parsed_last"],
        "signal_fraction": summary["signal_fraction"],
        "kl_last": summary["kl_last"],
        "clip_fraction": summary["clip_fraction"],
        "n_generation": train_cfg.rollout.n_generation,
        "temperature": train_cfg.train.train_policy.temperature,
        "grpo_label_counts": data.counts["grpo_train"],
    }
    sweep = None
    if cfg.sweep:
        sweep = sweep_checkpoints(
            SweepConfig(run_dir=out_dir, eval_data=str(data.sft_eval), prompt=demo_prompt(), batch_size=40),
            progress=cfg.progress,
        )
        first, last = sweep.point("start").metrics, sweep.point("final").metrics
        metrics.update(
            start_accuracy=first["accuracy"],
            grpo_accuracy=last["accuracy"],
            majority_accuracy=_majority(sweep),
            start_pearson=first["pearson"],
            grpo_pearson=last["pearson"],
        )
    return GRPOStageResult("demo", metrics, train=result, sweep=sweep, start_model=start, sft=sft)
