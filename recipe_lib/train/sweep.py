"""Checkpoint sweep: score every saved checkpoint of a training run on an evaluation split and plot the curves.

``sweep_checkpoints(SweepConfig) -> SweepResult`` scores the run's starting model (step 0), each ``step_N``
checkpoint still on disk and ``final`` with :func:`recipe_lib.inference.scoring.score_videos`, so every point is cached
under ``<run>/sweep/<checkpoint>/`` and a rerun scores only checkpoints it has not seen (a retrained checkpoint in the
same folder has new weights and is scored again). :func:`plot_sweep` draws accuracy and Pearson against the training
step, with the published numbers (:data:`recipe_lib.constants.PUBLISHED`) as labelled reference lines.

How a checkpoint is scored (``mode``): the recipe scores its checkpoints by sampling answers with its scoring
script's settings (:class:`recipe_lib.config.SamplingSettings`), the GRPO ones with the thinking prompt they were
trained with — ``generate``. ``auto`` (the default) does that for any critic but the demo one; the demo critic keeps
``expected`` (one forward pass reading p(1..5)), which is what lets notebooks 03/04 sweep on a CPU in seconds. The
kind of run (``sft`` / ``grpo``) is read from the run's ``run.json``; a cosmos-rl export folder has none, so pass
``run_kind`` (the sweep says when it assumed ``sft``).

The published numbers are for the real critics on VideoPhy-2's test split. They are drawn for orientation only: a
demo run trains the tiny critic on synthetic clips, a different model on different data.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

from recipe_lib.config import SamplingSettings, VideoSettings, resolve_model, resolve_path, to_dict
from recipe_lib.constants import PUBLISHED, PublishedFigure
from recipe_lib.errors import ConfigError, DataError, RecipeError
from recipe_lib.io import atomic_write_json
from recipe_lib.profiles import get_profile, is_demo_critic
from recipe_lib.progress import progress_enabled
from recipe_lib.train.run_folder import CHECKPOINTS, FINAL, STATE_JSON, RunFolder

__all__ = ["PUBLISHED", "PublishedFigure", "SweepConfig", "SweepResult", "plot_sweep", "sweep_checkpoints"]
PUBLISHED_NOTE = "published: real 7B critics on VideoPhy-2's test split (not this model or data)"
THINKING_PROMPT = "video_reward_with_thinking"  # the recipe's GRPO prompt (ours in prompts/)


@dataclasses.dataclass
class SweepConfig:
    """What to sweep. ``eval_data``: a dataset folder or table with ``video_url`` and ``pc`` (a conversation dataset
    qualifies). ``video`` None: the sampling keys of the eval conversations when they carry them, else the critic's
    (:func:`recipe_lib.profiles.critic_settings`). ``prompt`` None: the prompt the run was trained with (the file in
    ``prompts/`` or ``build/prompts`` whose system prompt its training conversations use), else the eval
    conversations' for SFT runs and the thinking prompt for GRPO runs. ``mode`` and ``run_kind``: see the module
    docstring. ``video_overrides`` / ``sampling_overrides``: settings given as flags, which win over everything."""

    run_dir: Path
    eval_data: str
    prompt: str | None = None
    profile: str = "demo"  # device and dtype defaults only: video and sampling settings follow the critic
    mode: Literal["auto", "expected", "generate"] = "auto"
    run_kind: Literal["sft", "grpo"] | None = None  # None: from run.json
    video: VideoSettings | None = None
    sampling: SamplingSettings | None = None
    video_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    sampling_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    batch_size: int = 16
    device: str | None = None
    dtype: str | None = None
    include_start: bool = True
    limit: int | None = None
    out_dir: Path | None = None
    workers: int = 2


@dataclasses.dataclass
class SweepPoint:
    step: int
    name: str
    model: str
    metrics: dict[str, Any]
    scored: int
    skipped: int
    from_cache: int
    unparsed: int = 0
    settings: dict[str, Any] | None = None  # the video/sampling settings used and their sources (ScoringProtocol)


@dataclasses.dataclass
class SweepResult:
    run_dir: Path
    out_dir: Path
    points: list[SweepPoint]
    run_kind: str = "sft"
    run_kind_source: str = ""
    mode: str = "expected"
    mode_source: str = ""
    prompt: str = ""
    prompt_source: str = ""

    def summary(self) -> dict[str, Any]:
        """How the checkpoints were scored (kind of run, mode, prompt, settings — each with its source) and the
        points; written as ``sweep_summary.json``."""
        settings = self.points[0].settings if self.points else None
        return {
            "run_dir": str(self.run_dir),
            "run_kind": self.run_kind,
            "run_kind_source": self.run_kind_source,
            "mode": self.mode,
            "mode_source": self.mode_source,
            "prompt": self.prompt,
            "prompt_source": self.prompt_source,
            "settings": settings,
            "points": [dataclasses.asdict(p) for p in self.points],
        }

    def summary_lines(self) -> list[str]:
        lines = [
            f"run kind {self.run_kind} ({self.run_kind_source}); mode {self.mode} ({self.mode_source}); "
            f"prompt {Path(self.prompt).stem} ({self.prompt_source})"
        ]
        if self.points and self.points[0].settings:
            s = self.points[0].settings
            video = ", ".join(f"{k} {v}" for k, v in s["video"].items() if v is not None)
            lines.append(f"video: {video} (from {s['video_source']}; {s['critic']} critic)")
            sampling = s["sampling"]
            text = ", ".join(f"{k} {v}" for k, v in sampling.items()) if sampling else "none (expected mode)"
            lines.append(f"sampling: {text}" + (f" (from {s['sampling_source']})" if sampling else ""))
        unparsed = sum(p.unparsed for p in self.points)
        if unparsed:
            lines.append(f"unparsed answers: {unparsed} over {len(self.points)} checkpoints (counted, not dropped)")
        return lines

    def frame(self):  # noqa: ANN201 - pandas.DataFrame
        import pandas as pd

        rows = [{"step": p.step, "checkpoint": p.name, **p.metrics, "scored": p.scored} for p in self.points]
        return pd.DataFrame(rows)

    def point(self, name: str) -> SweepPoint:
        for p in self.points:
            if p.name == name:
                return p
        raise RecipeError(f"no checkpoint '{name}' in the sweep of {self.run_dir}")

    def majority_accuracy(self) -> float | None:
        """The majority-class baseline on the swept eval split."""
        return self.points[0].metrics.get("majority_accuracy") if self.points else None

    def best(self, metric: str = "accuracy") -> SweepPoint:
        scored = [p for p in self.points if p.metrics.get(metric) is not None]
        if not scored:
            raise RecipeError(f"no checkpoint has a value for '{metric}'")
        return max(scored, key=lambda p: (p.metrics[metric], -p.step))

    def save(self, path: Path | None = None) -> Path:
        return atomic_write_json(path or self.out_dir / "sweep.json", [dataclasses.asdict(p) for p in self.points])


def cosmos_checkpoints(run_dir: Path) -> list[tuple[int, str, Path]]:
    """Exported checkpoints of a cosmos-rl run: ``safetensors/step_N`` under ``run_dir`` or its timestamped folders."""
    found = []
    for folder in [Path(run_dir), *sorted(p for p in Path(run_dir).iterdir() if p.is_dir())]:
        for step_dir in sorted((folder / "safetensors").glob("step_*")):
            suffix = step_dir.name.removeprefix("step_")
            if suffix.isdigit() and (step_dir / "config.json").is_file():
                name = step_dir.name if folder == Path(run_dir) else f"{folder.name}_{step_dir.name}"
                found.append((int(suffix), name, step_dir))
    return sorted(found)


def run_checkpoints(run_dir: Path) -> list[tuple[int, str, Path]]:
    """(step, name, folder) of every complete checkpoint of a run, by step: ``checkpoints/step_N`` and
    ``checkpoints/final`` of an in-process run, or ``safetensors/step_N`` of a cosmos-rl run."""
    run = RunFolder(Path(run_dir))
    found = [(step, path.name, path) for step, path in run.step_checkpoints()]
    if run.finished():
        step = int(json.loads((run.final / STATE_JSON).read_text())["step"])
        found = [f for f in found if f[0] != step] + [(step, FINAL, run.final)]
    if not found and Path(run_dir).is_dir():
        found = cosmos_checkpoints(run_dir)
    return sorted(found, key=lambda f: (f[0], f[1] == FINAL))


def _check_loadable(folder: Path) -> None:
    """A checkpoint must hold the processor files too (``load_critic`` reads both from one folder)."""
    if not any((folder / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")):
        raise DataError(
            f"checkpoint {folder} has weights but no processor files (preprocessor_config.json, tokenizer)",
            hint="copy the processor files of the model the run started from into it "
            "(AutoProcessor.from_pretrained(base).save_pretrained(folder))",
        )


def _start_model(run_dir: Path) -> str | None:
    marker = Path(run_dir) / "run.json"
    if not marker.exists():
        return None
    settings = json.loads(marker.read_text())
    model = (settings.get("policy") or {}).get("model_name_or_path")
    return resolve_model(model) if model else None


def _first_conversation(eval_data: str) -> list[dict[str, Any]] | None:
    from recipe_lib.data.tables import is_dataset_dir

    path = Path(eval_data)
    if not is_dataset_dir(path):
        return None
    import datasets

    ds = datasets.load_from_disk(str(path))
    if not isinstance(ds, datasets.Dataset) or "conversations" not in ds.column_names or not len(ds):
        return None
    return json.loads(ds[0]["conversations"])


def _system_text(messages: list[dict[str, Any]]) -> str | None:
    system = next((m for m in messages if m.get("role") == "system"), None)
    if system is None:
        return None
    content = system["content"]
    if isinstance(content, str):
        return content.strip()
    return "".join(p.get("text", "") for p in content if isinstance(p, dict)).strip()


def _prompt_files() -> list[Path]:
    from recipe_lib.config import PROMPTS_DIR, build_dir

    return sorted(PROMPTS_DIR.glob("*.yaml")) + sorted((build_dir() / "prompts").glob("*.yaml"))


def resolve_sweep_prompt(
    prompt: str | None, messages: list[dict[str, Any]] | None, fallback: str = "video_reward"
) -> str:
    """The prompt to score with: ``prompt`` (checked against the conversations) or the one they were written with
    (``fallback`` when there are none)."""
    from recipe_lib.prompts import load_prompt

    system = _system_text(messages) if messages else None
    if prompt is not None:
        if system is not None and load_prompt(prompt).system_prompt.strip() != system:
            raise ConfigError(
                f"the eval conversations were written with another prompt than '{prompt}'",
                hint="pass the prompt the run was trained with (--prompt), or leave it out to find it",
            )
        return prompt
    if system is None:
        return fallback
    for path in _prompt_files():
        try:
            if load_prompt(path).system_prompt.strip() == system:
                return str(path)
        except ConfigError:
            continue
    raise ConfigError(
        "no prompt file matches the system prompt of the eval conversations",
        hint="pass the prompt file the run was trained with (--prompt PATH)",
    )


def _run_settings(run_dir: Path) -> dict[str, Any]:
    marker = Path(run_dir) / "run.json"
    try:
        settings = json.loads(marker.read_text())
    except (OSError, ValueError):
        return {}
    return settings if isinstance(settings, dict) else {}


def resolve_run_kind(cfg: SweepConfig, settings: dict[str, Any]) -> tuple[str, str]:
    """(``sft`` | ``grpo``, where that came from): ``run_kind`` when given, else the run's ``run.json``."""
    recorded = ((settings.get("train") or {}).get("train_policy") or {}).get("type")
    if cfg.run_kind is not None:
        if cfg.run_kind not in ("sft", "grpo"):
            raise ConfigError(f"--run-kind {cfg.run_kind!r} is not allowed: it must be sft or grpo")
        if recorded in ("sft", "grpo") and recorded != cfg.run_kind:
            raise ConfigError(
                f"--run-kind {cfg.run_kind}, but {Path(cfg.run_dir) / 'run.json'} records a {recorded} run",
                hint="leave --run-kind out for a run trained here (its run.json says what it was)",
            )
        return cfg.run_kind, "flag"
    if recorded in ("sft", "grpo"):
        return recorded, "run.json"
    return "sft", "assumed: the folder has no run.json (a cosmos-rl export); pass --run-kind grpo for a GRPO run"


def _training_conversation(settings: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The first conversation of the dataset the run trained on, when run.json names one that is still there."""
    path = ((settings.get("custom") or {}).get("dataset") or {}).get("path")
    if not path:
        return None
    try:
        return _first_conversation(str(resolve_path(path)))
    except (OSError, ValueError, RecipeError):
        return None


def resolve_mode(cfg: SweepConfig, start_model: str) -> tuple[str, str]:
    """(``expected`` | ``generate``, why): ``auto`` samples answers like the recipe, except for the demo critic."""
    if cfg.mode in ("expected", "generate"):
        return cfg.mode, "flag"
    if cfg.mode != "auto":
        raise ConfigError(f"--mode {cfg.mode!r} is not allowed: it must be auto, expected or generate")
    if is_demo_critic(start_model):
        return "expected", "auto: the demo critic keeps the fast expected score (--mode generate samples answers)"
    return "generate", "auto: the recipe scores checkpoints by sampling answers"


def sweep_checkpoints(cfg: SweepConfig, progress: bool = True) -> SweepResult:
    """Score the starting model and every checkpoint of ``cfg.run_dir`` on ``cfg.eval_data`` (cached)."""
    from recipe_lib.evaluation.metrics import metrics_from_rows
    from recipe_lib.inference.score_config import ScoreConfig
    from recipe_lib.inference.scoring import score_videos

    progress = progress_enabled(progress)
    run_dir = Path(cfg.run_dir)
    in_process = (run_dir / CHECKPOINTS).is_dir() or (run_dir / "run.json").exists()
    if not in_process and not (run_dir.is_dir() and cosmos_checkpoints(run_dir)):
        raise DataError(
            f"{run_dir} is not a training run folder",
            hint="pass the train.output_dir of a run (in-process: holds checkpoints/; cosmos-rl: holds safetensors/)",
        )
    profile = get_profile(cfg.profile)
    settings = _run_settings(run_dir)
    run_kind, run_kind_source = resolve_run_kind(cfg, settings)
    messages = _first_conversation(cfg.eval_data)
    trained_on = _training_conversation(settings)
    fallback = THINKING_PROMPT if run_kind == "grpo" else "video_reward"
    if trained_on is not None:
        prompt = resolve_sweep_prompt(cfg.prompt, trained_on, fallback)
        prompt_source = "flag (checked against the training conversations)" if cfg.prompt else "training conversations"
    elif run_kind == "grpo":
        prompt = cfg.prompt or THINKING_PROMPT
        prompt_source = "flag" if cfg.prompt else "the recipe's GRPO prompt (thinking)"
    else:
        prompt = resolve_sweep_prompt(cfg.prompt, messages, fallback)
        prompt_source = "flag" if cfg.prompt else ("eval conversations" if messages else "the recipe's prompt")
    video, video_source = cfg.video, "given"
    if video is None and messages is not None:
        from recipe_lib.train.batching import parse_sample

        video, video_source = parse_sample(messages, 0, require_answer=False).video_settings, "eval conversations"
    checkpoints = run_checkpoints(run_dir)
    for _, _, path in checkpoints:
        _check_loadable(path)
    targets = [(step, name, str(path)) for step, name, path in checkpoints]
    if cfg.include_start:
        start = _start_model(run_dir)
        if start is not None:
            targets.insert(0, (0, "start", start))
    if not targets:
        raise DataError(f"{run_dir} has no checkpoints yet", hint="train first (or wait for the first save_freq steps)")
    mode, mode_source = resolve_mode(cfg, targets[0][2])
    out_dir = Path(cfg.out_dir or run_dir / "sweep")
    points: list[SweepPoint] = []
    for step, name, model in targets:
        result = score_videos(
            ScoreConfig(
                inputs=[cfg.eval_data],
                out_dir=out_dir / name,
                model=model,
                prompt=prompt,
                mode=mode,  # type: ignore[arg-type]
                video=video,
                sampling=cfg.sampling,
                video_overrides=dict(cfg.video_overrides),
                sampling_overrides=dict(cfg.sampling_overrides),
                video_source=video_source,
                batch_size=cfg.batch_size,
                device=cfg.device or profile.device,
                dtype=cfg.dtype or profile.dtype,
                limit=cfg.limit,
                workers=cfg.workers,
            ),
            progress=progress,
        )
        metrics = metrics_from_rows(result.rows).to_dict()
        points.append(
            SweepPoint(
                step,
                name,
                model,
                metrics,
                len(result.rows),
                len(result.skipped),
                result.n_cached,
                result.n_unparsed,
                result.protocol.to_json() if result.protocol else None,
            )
        )
    sweep = SweepResult(
        run_dir, out_dir, points, run_kind, run_kind_source, mode, mode_source, str(prompt), prompt_source
    )
    sweep.save()
    atomic_write_json(out_dir / "sweep_summary.json", sweep.summary())
    (out_dir / "sweep_config.json").write_text(json.dumps(to_dict(cfg), indent=2, default=str))
    return sweep


def plot_sweep(
    result: SweepResult,
    metrics: tuple[str, ...] = ("accuracy", "pearson"),
    published: bool = True,
    baseline: bool = True,
    title: str | None = None,
):  # noqa: ANN201 - matplotlib Figure
    """Accuracy and Pearson against the training step, one panel each; reference lines are labelled as published
    figures of the real model (dotted) and the majority-class baseline of this eval split (dashed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * len(metrics), 3.8), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    steps = [p.step for p in result.points]
    from recipe_lib.plots import published_lines

    # An SFT run is drawn against the SFT figures; a GRPO run (which starts from SFT) against both.
    stages = ("zero-shot", "sft", "baseline") + (("grpo",) if result.run_kind == "grpo" else ())
    for ax, metric in zip(axes, metrics):
        values = [p.metrics.get(metric) for p in result.points]
        xs = [s for s, v in zip(steps, values) if v is not None]
        ys = [v for v in values if v is not None]
        ax.plot(xs, ys, "o-", color="#4c72b0", label="this run")
        for p in result.points:
            if p.name in ("start", FINAL) and p.metrics.get(metric) is not None:
                ax.annotate(p.name, (p.step, p.metrics[metric]), textcoords="offset points", xytext=(4, 6), fontsize=8)
        if baseline and metric == "accuracy" and result.points:
            majority = result.points[0].metrics.get("majority_accuracy")
            if majority is not None:
                ax.axhline(majority, linestyle="--", color="grey", linewidth=1, label="majority class (this split)")
        if published:
            published_lines(ax, metric, stages)
        ax.set_xlabel("training step")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.legend(fontsize=7, loc="best")
    if published:
        fig.supxlabel(f"dotted lines — {PUBLISHED_NOTE}", fontsize=8, color="dimgrey")
    if title:
        fig.suptitle(title)
    return fig
