"""Checkpoint sweep: score every saved checkpoint of a training run on an evaluation split and plot the curves.

``sweep_checkpoints(SweepConfig) -> SweepResult`` scores the run's starting model (step 0), each ``step_N``
checkpoint still on disk and ``final`` with :func:`recipe_lib.inference.scoring.score_videos` (``expected`` mode), so
every point is cached under ``<run>/sweep/<checkpoint>/`` and a rerun scores only checkpoints it has not seen
(a retrained checkpoint in the same folder has new weights and is scored again). :func:`plot_sweep` draws accuracy
and Pearson against the training step, with the recipe's published numbers as labelled reference lines.

The published numbers are for the real ``nvidia/Cosmos-Reason1-7B`` on VideoPhy-2's test split (Pearson r of the
score against the human ``pc`` label): zero-shot 0.293, SFT best 0.395 (step 60), GRPO 0.425 (best checkpoint, step
900, accuracy 0.374), and the VideoPhy-AutoEval critic 0.37. They are drawn for orientation only: a demo run trains
the tiny critic on synthetic clips, a different model on different data.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from recipe_lib.config import VideoSettings, resolve_model, to_dict
from recipe_lib.errors import ConfigError, DataError, RecipeError
from recipe_lib.io import atomic_write_json
from recipe_lib.profiles import get_profile
from recipe_lib.train.logger import progress_enabled
from recipe_lib.train.run_folder import CHECKPOINTS, FINAL, STATE_JSON, RunFolder

# (label, metric, value): the recipe's published key points for Cosmos-Reason1-7B on VideoPhy-2.
PUBLISHED: tuple[tuple[str, str, float], ...] = (
    ("zero-shot", "pearson", 0.293),
    ("SFT best (step 60)", "pearson", 0.395),
    ("GRPO best (step 900)", "pearson", 0.425),
    ("VideoPhy-AutoEval", "pearson", 0.37),
    ("GRPO best (step 900)", "accuracy", 0.374),
)
PUBLISHED_NOTE = "published: Cosmos-Reason1-7B on VideoPhy-2 (not this model or data)"


@dataclasses.dataclass
class SweepConfig:
    """What to sweep. ``eval_data``: a dataset folder or table with ``video_url`` and ``pc`` (a conversation dataset
    qualifies). ``video`` None: the sampling keys of the eval conversations when they carry them, else the profile's.
    ``prompt`` None: the file in ``prompts/`` (or ``build/prompts``) whose system prompt the conversations use."""

    run_dir: Path
    eval_data: str
    prompt: str | None = None  # None: the prompt file the eval conversations were written with, else video_reward
    profile: str = "demo"
    video: VideoSettings | None = None
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


@dataclasses.dataclass
class SweepResult:
    run_dir: Path
    out_dir: Path
    points: list[SweepPoint]

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


def resolve_sweep_prompt(prompt: str | None, messages: list[dict[str, Any]] | None) -> str:
    """The prompt to score with: ``prompt`` (checked against the conversations) or the one they were written with."""
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
        return "video_reward"
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


def sweep_checkpoints(cfg: SweepConfig, progress: bool = True) -> SweepResult:
    """Score the starting model and every checkpoint of ``cfg.run_dir`` on ``cfg.eval_data`` (cached)."""
    from recipe_lib.inference.scoring import ScoreConfig, score_videos
    from recipe_lib.metrics import metrics_from_rows

    progress = progress_enabled(progress)
    run_dir = Path(cfg.run_dir)
    in_process = (run_dir / CHECKPOINTS).is_dir() or (run_dir / "run.json").exists()
    if not in_process and not (run_dir.is_dir() and cosmos_checkpoints(run_dir)):
        raise DataError(
            f"{run_dir} is not a training run folder",
            hint="pass the train.output_dir of a run (in-process: holds checkpoints/; cosmos-rl: holds safetensors/)",
        )
    profile = get_profile(cfg.profile)
    messages = _first_conversation(cfg.eval_data)
    prompt = resolve_sweep_prompt(cfg.prompt, messages)
    video = cfg.video
    if video is None and messages is not None:
        from recipe_lib.train.batching import parse_sample

        video = parse_sample(messages, 0, require_answer=False).video_settings
    video = video or profile.video
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
    out_dir = Path(cfg.out_dir or run_dir / "sweep")
    points: list[SweepPoint] = []
    for step, name, model in targets:
        result = score_videos(
            ScoreConfig(
                inputs=[cfg.eval_data],
                out_dir=out_dir / name,
                model=model,
                prompt=prompt,
                mode="expected",
                video=video,
                batch_size=cfg.batch_size,
                device=cfg.device or profile.device,
                dtype=cfg.dtype or profile.dtype,
                limit=cfg.limit,
                workers=cfg.workers,
            ),
            progress=progress,
        )
        metrics = metrics_from_rows(result.rows).to_dict()
        points.append(SweepPoint(step, name, model, metrics, len(result.rows), len(result.skipped), result.n_cached))
    sweep = SweepResult(run_dir, out_dir, points)
    sweep.save()
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
    colours = ("#8172b3", "#55a868", "#c44e52", "#937860", "#da8bc3")
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
            refs = [(label, value) for label, m, value in PUBLISHED if m == metric]
            for (label, value), colour in zip(refs, colours):
                name = f"published 7B, {label}: {value:.3f}"
                ax.axhline(value, linestyle=":", color=colour, linewidth=1.2, label=name)
        ax.set_xlabel("training step")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.legend(fontsize=7, loc="best")
    if published:
        fig.supxlabel(f"dotted lines — {PUBLISHED_NOTE}", fontsize=8, color="dimgrey")
    if title:
        fig.suptitle(title)
    return fig
