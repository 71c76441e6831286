"""Evaluation stage (notebook 06): several critics on one labelled split, side by side.

``run_evaluate(EvalConfig) -> EvalResult`` scores every critic through the cached scoring stage
(``build/06_evaluation/scores/<critic>/results.sqlite``: a rerun scores only what is missing), computes the metric suite
per critic (every number with a bootstrap interval), per-group breakdowns, a comparison table, confusion matrices,
the threshold that best separates good from bad clips, and, on the synthetic suite, how often each kind of violation
is caught (share of violating clips scored below the threshold) against the false-alarm rate on plausible clips. It
also measures the calibration of p(1..5) and P(good) (:mod:`recipe_lib.evaluation.calibration`) and flags a critic whose
predictions collapse onto one score (:mod:`recipe_lib.evaluation.collapse`). A critic given as a table of scores
(``NAME=scores.csv``, :mod:`recipe_lib.evaluation.outside_scores`)
is joined to the clips and measured the same way, without a
model. It writes ``evaluation_report.html`` and ``evaluation_results.json`` (every number in the page) into the output
folder.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np

from recipe_lib.config import SamplingSettings, VideoSettings, build_dir
from recipe_lib.constants import DEFAULT_THRESHOLD, LABEL_COLUMN
from recipe_lib.errors import ConfigError, DataError, RecipeError
from recipe_lib.evaluation.calibration import (
    ECE_BINS,
    Calibration,
    CriticCalibration,
    load_calibration,
    measure_calibration,
)
from recipe_lib.evaluation.collapse import CollapseCheck, check_collapse
from recipe_lib.evaluation.filtering import (
    ThresholdChoice,
    choose_threshold_from_rows,
    decision_value,
    threshold_figure,
)
from recipe_lib.evaluation.metrics import METRICS, MetricSuite, group_breakdown, labelled_rows, suite_from_rows
from recipe_lib.evaluation.outside_scores import OutsideScoreResult, is_outside_table, load_outside_scores
from recipe_lib.evaluation.report import (
    CriticScores,
    ReportConfig,
    ReportResult,
    ReportSection,
    confusion_figure,
    write_report,
)
from recipe_lib.inference.plan import resolve_inputs
from recipe_lib.inference.record import item_of
from recipe_lib.inference.score_config import ScoreConfig, ScoreResult
from recipe_lib.inference.scoring import score_videos
from recipe_lib.io import atomic_write_csv, claim_outputs, writes_as
from recipe_lib.profiles import get_profile
from recipe_lib.prompts import load_prompt
from recipe_lib.validation import check_fields

REPORT_NAME = "evaluation_report.html"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _opt(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class EvalConfig:
    """What to evaluate. ``critics`` maps a short name (used in tables and folder names) to a model folder or hub id,
    or to a table of an outside critic's scores (``.csv``/``.parquet``/``.jsonl``); None means the profile's default
    (:meth:`recipe_lib.profiles.Profile.critics`). ``calibrations`` maps a critic's name to a calibration file
    applied to its p(1..5) before anything is measured."""

    critics: dict[str, str] | None = None
    eval_data: str | None = _opt(None, "labelled dataset folder or table (demo default: the synthetic eval split)")
    profile: Literal["demo", "full"] = _opt("demo", "defaults for the critics, device and batch size")
    mode: Literal["expected", "generate"] = _opt("expected", "expected: p(1..5) in one pass; generate: sampled answers")
    threshold: float = _opt(DEFAULT_THRESHOLD, "good = label/score at least this")
    out_dir: Path | None = _opt(None, "output folder (default: build/06_evaluation)")
    prompt: str | None = _opt(None, "prompt YAML (default: demo compact prompt / full video_reward)")
    label_key: str = _opt(LABEL_COLUMN, "the label column")
    batch_size: int | None = _opt(None, "clips per forward pass (default: the profile's)")
    limit: int | None = _opt(None, "evaluate only the first N clips")
    split: str | None = _opt(None, "split name when the dataset folder holds several")
    n_boot: int = _opt(1000, "bootstrap resamples for the intervals")
    seed: int = _opt(0, "bootstrap seed")
    confidence: float = 0.95
    objective: Literal["f1", "precision"] = "f1"
    target_precision: float | None = _opt(
        None, "choose the threshold with the most recall at this precision (default: maximise F1)"
    )
    device: str | None = _opt(None, "cpu, cuda, cuda:1 or auto (default: the profile's)")
    dtype: str | None = _opt(None, "float32, bfloat16, float16 or auto (default: the profile's)")
    video: VideoSettings | None = None
    sampling: SamplingSettings | None = None
    thumbnails: bool = _opt(True, "clip thumbnails in the report")
    # Tasks (recipe_lib.tasks): the first 1-5 task (pc before sa) drives the comparison table, thresholds and report;
    # the others (and joint, when pc and sa are both scored) are measured in ``task_metrics`` and tasks.csv.
    tasks: tuple[str, ...] = ("pc",)
    caption_column: str = _opt("caption", "task sa: column with the caption")
    sa_column: str = _opt("sa", "task sa: label column")
    calibrations: dict[str, str] | None = None

    def __post_init__(self) -> None:
        check_fields(self)


@dataclasses.dataclass
class EvalResult:
    out_dir: Path
    critics: dict[str, str]
    scores: dict[str, ScoreResult]
    metrics: dict[str, MetricSuite]
    groups: dict[str, Any]  # critic -> DataFrame (metrics.group_breakdown)
    thresholds: dict[str, ThresholdChoice | None]
    threshold_notes: dict[str, str]
    table: Any  # DataFrame: one row per critic, metric values and interval bounds
    detection: Any  # DataFrame: per critic and violation type (empty when the clips carry no violation column)
    report: ReportResult
    threshold: float
    task: str = "pc"  # the task of ``scores`` / ``metrics``
    task_scores: dict[str, dict[str, ScoreResult]] = dataclasses.field(default_factory=dict)  # critic -> task -> ...
    task_metrics: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # critic -> task/joint -> suite
    calibration: dict[str, CriticCalibration] = dataclasses.field(default_factory=dict)  # measured, per critic
    collapse: dict[str, CollapseCheck] = dataclasses.field(default_factory=dict)
    applied_calibrations: dict[str, Calibration] = dataclasses.field(default_factory=dict)  # critic -> map applied

    def warnings(self) -> list[str]:
        """Collapse warnings and the clips an outside critic's table left out, one line each."""
        lines = [m for name, c in self.collapse.items() if (m := c.message(name))]
        for name, s in self.scores.items():
            if isinstance(s, OutsideScoreResult):
                lines += [f"{name}: {line}" for line in s.join_lines()]
        return lines

    def calibration_table(self) -> Any:
        """One row per critic: label kind, clips with p(1..5), ECE of p(1..5) and of P(good) with intervals."""
        import pandas as pd

        table = pd.DataFrame({n: c.row() for n, c in self.calibration.items()}).T
        table.index.name = "critic"
        return table

    def reliability_figure(self) -> Any:
        from recipe_lib.evaluation.calibration import reliability_figure

        return reliability_figure(self.calibration)

    def display_table(self) -> Any:
        """The comparison table with each metric as "value [low, high]" (for reading, not computing)."""
        import pandas as pd

        out = {}
        for name, suite in self.metrics.items():
            rec = {"n": suite.n, "coverage": f"{suite.coverage:.2f}"}
            for m in METRICS:
                v = suite.values[m]
                lo, hi = suite.intervals[m]
                rec[m] = "–" if math.isnan(v) else f"{v:.3f} [{_f(lo)}, {_f(hi)}]"
            rec["majority_accuracy"] = _f(suite.majority_accuracy)
            out[name] = rec
        return pd.DataFrame(out).T

    def confusion_figures(self) -> dict[str, Any]:
        """One Figure per critic."""
        return {name: confusion_figure(s, f"{name}: labels vs predictions") for name, s in self.metrics.items()}

    def confusion_figure(self) -> Any:
        """All critics' confusion matrices side by side in one Figure."""
        return confusion_grid(self.metrics)

    def threshold_figure(self) -> Any:
        chosen = {k: v for k, v in self.thresholds.items() if v is not None}
        if not chosen:
            return None
        return threshold_figure(chosen, title="precision / recall / F1 of keeping clips scored at least t")

    def detection_figure(self) -> Any:
        return detection_figure(self.detection, self.threshold)

    def summary(self) -> dict[str, Any]:
        """Per-critic headline numbers (for ``save_metrics``)."""
        out: dict[str, Any] = {}
        for name, suite in self.metrics.items():
            rec: dict[str, Any] = {"n": suite.n, "coverage": _none(suite.coverage)}
            rec.update({m: _none(v) for m, v in suite.values.items()})
            rec["intervals"] = {m: [_none(lo), _none(hi)] for m, (lo, hi) in suite.intervals.items()}
            choice = self.thresholds.get(name)
            rec["best_threshold"] = choice.threshold if choice else None
            rec["best_threshold_f1"] = choice.f1 if choice else None
            if name in self.calibration:
                cal = self.calibration[name]
                rec["ece"] = _none(cal.ece)
                rec["ece_p_good"] = _none(cal.ece_good)
                rec["calibration"] = cal.to_dict()
            if name in self.collapse:
                rec["collapse"] = self.collapse[name].to_dict()
            if name in self.applied_calibrations:
                rec["calibration_applied"] = self.applied_calibrations[name].summary()
            score = self.scores.get(name)
            if isinstance(score, OutsideScoreResult):
                rec["source"] = score.summary()
            if len(self.detection):
                d = self.detection[self.detection["critic"] == name]
                viol = d[d["violation"] != "none"]
                plausible = d[d["violation"] == "none"]
                rec["detection_rate"] = _none(viol["rejected"].sum() / viol["n"].sum()) if viol["n"].sum() else None
                rec["false_alarm_rate"] = _none(plausible["rate"].iloc[0]) if len(plausible) else None
            if self.task_metrics.get(name):
                rec["tasks"] = {t: s.to_dict()["metrics"] for t, s in self.task_metrics[name].items()}
            protocol = self.scores[name].protocol if name in self.scores else None
            rec["settings"] = protocol.to_json() if protocol else None
            out[name] = rec
        return out


def task_table(task_metrics: dict[str, dict[str, Any]]) -> Any:
    """One row per critic, task and metric (value and interval) for the tasks beside the main one."""
    import pandas as pd

    records = []
    for critic, suites in task_metrics.items():
        for task, suite in suites.items():
            for metric, value in suite.values.items():
                lo, hi = suite.intervals.get(metric, (float("nan"), float("nan")))
                records.append({"critic": critic, "task": task, "metric": metric, "value": value, "lo": lo, "hi": hi})
    return pd.DataFrame(records, columns=["critic", "task", "metric", "value", "lo", "hi"])


def _f(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"


def _none(value: Any) -> Any:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def confusion_grid(suites: dict[str, MetricSuite]):  # noqa: ANN201
    """Confusion matrices (labels down, predicted 1-5 and unparsed across), one panel per critic."""
    from matplotlib.figure import Figure

    from recipe_lib.evaluation.metrics import CONFUSION_COLUMNS, SCORE_VALUES

    fig = Figure(figsize=(4.2 * max(1, len(suites)), 3.6), layout="constrained")
    axes = fig.subplots(1, max(1, len(suites)), squeeze=False)[0]
    for ax, (name, suite) in zip(axes, suites.items()):
        data = suite.confusion
        ax.imshow(data, cmap="Blues", aspect="auto", vmin=0)
        ax.set_xticks(range(6), list(CONFUSION_COLUMNS), fontsize=8)
        ax.set_yticks(range(5), [str(v) for v in SCORE_VALUES])
        top = data.max() if data.size else 0
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                color = "white" if top and data[i, j] > 0.6 * top else "black"
                ax.text(j, i, str(int(data[i, j])), ha="center", va="center", fontsize=8, color=color)
        ax.set_xlabel("predicted")
        ax.set_ylabel("label")
        ax.set_title(f"{name} (n={suite.n}, acc={suite['accuracy']:.2f})", fontsize=10)
    return fig


def _check_critics(critics: dict[str, str]) -> None:
    if not critics:
        raise ConfigError("no critics to evaluate", hint="pass at least one NAME=MODEL")
    for name, model in critics.items():
        if not _NAME_RE.fullmatch(name):
            raise ConfigError(
                f"critic name {name!r} is not usable as a short name",
                hint="use letters, digits, '.', '_' or '-' (it names a folder and a table column)",
            )
        if not model or not str(model).strip():
            raise ConfigError(f"critic '{name}' has no model path or hub id")


def _load_calibrations(cfg: EvalConfig, critics: dict[str, str]) -> dict[str, Calibration]:
    """The calibration files named per critic, read and checked before any clip is scored."""
    out = {}
    for name, path in (cfg.calibrations or {}).items():
        if name not in critics:
            raise ConfigError(
                f"--calibration names critic '{name}', which is not evaluated",
                hint=f"critics: {', '.join(critics)} (give NAME=FILE with a NAME from --critic)",
            )
        out[name] = load_calibration(path)
    return out


def detection_rates(
    rows_by_critic: dict[str, list[dict[str, Any]]],
    threshold: float,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Any:
    """Per critic and violation type: the share of clips scored below ``threshold`` (a *detection* for violating
    clips, a *false alarm* for plausible ones, ``violation == "none"``), with a bootstrap interval. Unparsed clips
    count as not detected (and are counted in ``unparsed``)."""
    import pandas as pd

    records = []
    rng_seed = seed
    for critic, rows in rows_by_critic.items():
        groups: dict[tuple[str, str], list[bool | None]] = {}
        for r in rows:
            item = item_of(r)
            if item.get("violation") is None:
                continue
            value = decision_value(r)[0] if r.get("score") is not None else None
            key = (str(item["violation"]), str(item.get("violation_category") or ""))
            groups.setdefault(key, []).append(None if value is None else value < threshold)
        for (violation, category), flags in sorted(groups.items(), key=lambda kv: (kv[0][0] != "none", kv[0])):
            hits = np.array([bool(f) for f in flags], dtype=float)
            n = len(hits)
            rate = float(hits.mean()) if n else float("nan")
            rng = np.random.default_rng(rng_seed)
            if n and n_boot > 0:
                means = hits[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
                alpha = (1 - confidence) / 2
                lo, hi = (float(x) for x in np.quantile(means, [alpha, 1 - alpha]))
            else:
                lo = hi = float("nan")
            records.append(
                {
                    "critic": critic,
                    "violation": violation,
                    "category": category or ("none" if violation == "none" else ""),
                    "kind": "false alarm" if violation == "none" else "detection",
                    "n": n,
                    "rejected": int(hits.sum()),
                    "unparsed": sum(1 for f in flags if f is None),
                    "rate": rate,
                    "rate_lo": lo,
                    "rate_hi": hi,
                }
            )
    columns = ["critic", "violation", "category", "kind", "n", "rejected", "unparsed", "rate", "rate_lo", "rate_hi"]
    return pd.DataFrame(records, columns=columns)


def detection_figure(detection: Any, threshold: float = 4.0):  # noqa: ANN201
    """Grouped bars: per violation type, the share of clips each critic scored below the threshold (the first group,
    ``none``, is the false-alarm rate on plausible clips), with bootstrap error bars."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.8), layout="constrained")
    ax = fig.add_subplot()
    if detection is None or not len(detection):
        ax.text(0.5, 0.5, "the clips carry no violation column", ha="center", va="center")
        ax.axis("off")
        return fig
    violations = list(dict.fromkeys(detection["violation"]))
    critics = list(dict.fromkeys(detection["critic"]))
    width = 0.8 / len(critics)
    x = np.arange(len(violations))
    for k, critic in enumerate(critics):
        d = detection[detection["critic"] == critic].set_index("violation").reindex(violations)
        rate = d["rate"].to_numpy(dtype=float)
        err = np.vstack([rate - d["rate_lo"].to_numpy(dtype=float), d["rate_hi"].to_numpy(dtype=float) - rate])
        ax.bar(x + (k - (len(critics) - 1) / 2) * width, rate, width, yerr=np.nan_to_num(err), capsize=2, label=critic)
    ax.set_xticks(
        x, [("none\n(false alarm)" if v == "none" else v) for v in violations], rotation=30, ha="right", fontsize=8
    )
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"share scored < {threshold:g}")
    ax.set_title("Violations caught per type (and false alarms on plausible clips)", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def resolve_prompt(cfg: EvalConfig) -> str:
    """The prompt given, else the one the profile's critics learn with."""
    return cfg.prompt or get_profile(cfg.profile).prompt


def _resolve(cfg: EvalConfig) -> tuple[dict[str, str], str]:
    profile = get_profile(cfg.profile)
    critics = profile.critics(cfg.critics)
    eval_data = profile.eval_data(cfg.eval_data)
    _check_critics(critics)
    return critics, eval_data


@writes_as("evaluate")
def run_evaluate(cfg: EvalConfig, progress: bool = True) -> EvalResult:
    """Score each critic on the evaluation split and compare them; see the module docstring."""
    from recipe_lib.tasks import parse_tasks

    tasks = parse_tasks(list(cfg.tasks))
    main_task = next((t for t in ("pc", "sa") if t in tasks), None)
    if main_task is None:
        raise ConfigError(
            "evaluate needs task pc or sa besides rule (its comparison table and thresholds read a 1-5 score)",
            hint=f"e.g. --task pc,{','.join(tasks)}",
        )
    critics, eval_data = _resolve(cfg)
    out = Path(cfg.out_dir or build_dir() / "06_evaluation")
    names = [
        "comparison.csv",
        "detection_rates.csv",
        "groups.csv",
        "scores",
        *(["tasks.csv"] if len(tasks) > 1 else []),
    ]
    claim_outputs(out, names + ReportConfig(out_path=out / REPORT_NAME, thumbnails=cfg.thumbnails).output_names())
    calibrations = _load_calibrations(cfg, critics)
    outside = {name: table for name, table in critics.items() if is_outside_table(table)}
    tables: dict[str, ScoreResult] = {}
    if outside:  # joined before any model scores, so a bad table fails at once
        items = resolve_inputs([eval_data], cfg.split, cfg.label_key)[0]
        items = items[: cfg.limit] if cfg.limit is not None else items
        tables = {n: load_outside_scores(n, table, items, out / "scores" / n) for n, table in outside.items()}
    # An outside critic's table holds one score per clip: it stands in for the main task only.
    task_scores = {
        name: {main_task: tables[name]}
        if name in tables
        else _score_tasks(cfg, name, model, eval_data, tasks, out, progress)
        for name, model in critics.items()
    }
    for name, calibration in calibrations.items():
        main = task_scores[name][main_task]
        if not any(r.get("probs") for r in main.rows):
            raise DataError(
                f"critic '{name}' has no p(1..5) to calibrate",
                hint="calibration applies to expected-mode scores (or a table with p1..p5 columns)",
            )
        task_scores[name][main_task] = dataclasses.replace(main, rows=calibration.apply_rows(main.rows)[0])
    scores = {name: by_task[main_task] for name, by_task in task_scores.items()}
    label_key = cfg.label_key if main_task == "pc" else cfg.sa_column
    first = next(iter(scores.values()))
    if not labelled_rows(first.rows, label_key):
        raise DataError(
            f"no clip in {eval_data} has a label in column '{label_key}'",
            hint="evaluation needs labelled clips; to score unlabelled clips use `plausibility score`",
        )
    boot = {"n_boot": cfg.n_boot, "seed": cfg.seed, "confidence": cfg.confidence}
    metrics = {n: suite_from_rows(s.rows, label_key, threshold=cfg.threshold, **boot) for n, s in scores.items()}
    task_metrics = {n: _task_suites(cfg, by_task, main_task, boot) for n, by_task in task_scores.items()}
    groups = {n: group_breakdown(s.rows, None, label_key, threshold=cfg.threshold, **boot) for n, s in scores.items()}
    thresholds: dict[str, ThresholdChoice | None] = {}
    notes: dict[str, str] = {}
    for name, s in scores.items():
        try:
            thresholds[name] = choose_threshold_from_rows(
                s.rows, cfg.objective, cfg.target_precision, label_threshold=cfg.threshold, label_key=label_key
            )
            notes[name] = "chosen"
        except RecipeError as exc:
            thresholds[name] = None
            notes[name] = exc.message
    import pandas as pd

    table = pd.DataFrame({name: suite.row() for name, suite in metrics.items()}).T
    table.index.name = "critic"
    table["majority_accuracy"] = [m.majority_accuracy for m in metrics.values()]
    table["best_threshold"] = [t.threshold if t else float("nan") for t in thresholds.values()]
    detection = detection_rates({n: s.rows for n, s in scores.items()}, cfg.threshold, **boot)
    calibration = {
        n: measure_calibration(s.rows, cfg.label_key, threshold=cfg.threshold, **boot) for n, s in scores.items()
    }
    collapse = {n: check_collapse(s.rows, cfg.label_key) for n, s in scores.items()}

    atomic_write_csv(out / "comparison.csv", table, index=True)
    atomic_write_csv(out / "detection_rates.csv", detection)
    atomic_write_csv(out / "groups.csv", pd.concat([g.assign(critic=n) for n, g in groups.items()], ignore_index=True))
    if len(tasks) > 1:
        atomic_write_csv(out / "tasks.csv", task_table(task_metrics))
    result = EvalResult(
        out_dir=out,
        critics=critics,
        scores=scores,
        metrics=metrics,
        groups=groups,
        thresholds=thresholds,
        threshold_notes=notes,
        table=table,
        detection=detection,
        report=None,  # type: ignore[arg-type]
        threshold=cfg.threshold,
        task=main_task,
        task_scores=task_scores,
        task_metrics=task_metrics,
        calibration=calibration,
        collapse=collapse,
        applied_calibrations=calibrations,
    )
    result.report = _write(result, cfg, eval_data)
    return result


def _score_tasks(
    cfg: EvalConfig, name: str, model: str, eval_data: str, tasks: tuple[str, ...], out: Path, progress: bool
) -> dict[str, ScoreResult]:
    """One critic's scores for every task, into one store (``scores/<critic>``), the critic loaded once."""
    from recipe_lib.stages.score import SharedCritic
    from recipe_lib.tasks import TaskColumns, task_prompt

    profile = get_profile(cfg.profile)
    columns = TaskColumns(pc=cfg.label_key, sa=cfg.sa_column, caption=cfg.caption_column)
    configs = {
        task: ScoreConfig(
            inputs=[eval_data],
            out_dir=out / "scores" / name,
            model=model,
            prompt=task_prompt(task, None, resolve_prompt(cfg)),
            mode=cfg.mode,
            video=cfg.video,  # None: each critic's own (recipe_lib.profiles.critic_settings)
            sampling=cfg.sampling,
            batch_size=cfg.batch_size or profile.batch_size,
            device=cfg.device or profile.device,
            dtype=cfg.dtype or profile.dtype,
            split=cfg.split,
            limit=cfg.limit,
            task=task,
            label_column=columns.label(task) or cfg.label_key,
            caption_column=cfg.caption_column,
        )
        for task in tasks
    }
    from recipe_lib.stages.score import check_task_inputs

    check_task_inputs(configs)
    shared = SharedCritic(configs[tasks[0]])
    return {
        task: score_videos(
            tc, progress=progress, scorer=shared.for_prompt(load_prompt(tc.prompt)) if len(tasks) > 1 else None
        )
        for task, tc in configs.items()
    }


def _task_suites(
    cfg: EvalConfig, by_task: dict[str, ScoreResult], main_task: str, boot: dict[str, Any]
) -> dict[str, Any]:
    """The metric suites of the tasks beside the main one: the other 1-5 task, joint, rule."""
    from recipe_lib.evaluation.filtering import joint_records
    from recipe_lib.evaluation.metrics import joint_suite, rule_suite_from_rows

    suites: dict[str, Any] = {}
    if "sa" in by_task and main_task != "sa" and labelled_rows(by_task["sa"].rows, cfg.sa_column):
        suites["sa"] = suite_from_rows(by_task["sa"].rows, cfg.sa_column, threshold=cfg.threshold, **boot)
    if "pc" in by_task and "sa" in by_task:
        records = joint_records(
            by_task["pc"].rows,
            by_task["sa"].rows,
            by_task["pc"].skipped,
            by_task["sa"].skipped,
            cfg.label_key,
            cfg.sa_column,
            cfg.threshold,
        )
        suites["joint"] = joint_suite(records, threshold=cfg.threshold, **boot)
    if "rule" in by_task and by_task["rule"].rows:
        suites["rule"] = rule_suite_from_rows(by_task["rule"].rows, **boot)
    return suites


def settings_section(scores: dict[str, ScoreResult]) -> ReportSection:
    """Which video and sampling settings each critic was scored with, and where they came from."""
    rows = []
    for name, s in scores.items():
        p = s.protocol.to_json() if s.protocol else {}
        rows.append(
            {
                "critic": name,
                "critic kind": p.get("critic"),
                "video": ", ".join(f"{k} {v}" for k, v in (p.get("video") or {}).items() if v is not None),
                "video from": p.get("video_source"),
                "sampling": ", ".join(f"{k} {v}" for k, v in (p.get("sampling") or {}).items()) or "none",
                "sampling from": p.get("sampling_source"),
            }
        )
    return ReportSection(
        title="Video and sampling settings",
        text="Per critic: the settings it was scored with and their source — flag (set explicitly), critic (the demo "
        "critic gets the demo settings, any other critic the recipe's: fps 16, total_pixels 8192·28·28), or the "
        "settings the caller passed.",
        table=rows,
    )


def published_section(table: Any) -> ReportSection:
    """This evaluation's accuracy and Pearson r beside the published figures for the real critics."""
    from recipe_lib.constants import PUBLISHED
    from recipe_lib.plots import published_comparison

    return ReportSection(
        title="Against the published figures",
        text="Bars: the critics of this evaluation. Dotted lines: published figures on VideoPhy-2's test split "
        "(Cosmos-Reason1-7B and Cosmos-Reason2 recipes, the VideoPhy-2 paper) — another model on other data unless "
        "this evaluation is Cosmos-Reason1-7B on VideoPhy-2.",
        table=[
            {
                "figure": p.label,
                "critic": p.critic,
                "metric": p.metric,
                "value": p.value,
                "step": p.step,
                "source": p.source,
            }
            for p in PUBLISHED
        ],
        figure=published_comparison(table),
    )


def _write(result: EvalResult, cfg: EvalConfig, eval_data: str) -> ReportResult:
    from recipe_lib.stages.score import task_sections

    sections = []
    for critic, suites in result.task_metrics.items():
        for section in task_sections(suites, result.task):
            section.title = f"{section.title}: {critic}"
            sections.append(section)
    if len(result.detection):
        det = result.detection.copy()
        det["rate"] = det["rate"].round(4)
        sections.append(
            ReportSection(
                title="Violations caught per type",
                text=f"Share of clips of each violation type scored below {cfg.threshold:g} (expected score, else "
                "score); for plausible clips ('none') this is the false-alarm rate. Unparsed clips count as not "
                f"caught. Intervals: {round(cfg.confidence * 100)} % bootstrap.",
                table=det.to_dict(orient="records"),
                figure=result.detection_figure(),
            )
        )
    cal_rows = []
    for name, cal in result.calibration.items():
        row = {"critic": name, **cal.row()}
        if name in result.applied_calibrations:
            row["note"] = f"calibrated ({result.applied_calibrations[name].describe()}); {row['note']}".rstrip("; ")
        cal_rows.append({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
    sections.append(
        ReportSection(
            title="Calibration",
            text="Do the probabilities mean what they say? Left: clips binned by the largest of p(1..5) against the "
            "share whose most likely digit is the label (graded labels only); right: clips binned by P(good) = "
            f"p(digit >= {cfg.threshold:g}) against the share labelled good. ECE: the clip-weighted mean gap over "
            f"{ECE_BINS} bins (0 = calibrated), with a {round(cfg.confidence * 100)} % bootstrap interval. A "
            "miscalibrated critic is corrected with `plausibility calibrate` on a separate labelled calibration split.",
            table=cal_rows,
            figure=result.reliability_figure(),
        )
    )
    choice_rows = []
    for name, choice in result.thresholds.items():
        if choice is None:
            choice_rows.append({"critic": name, "threshold": None, "note": result.threshold_notes[name]})
        else:
            choice_rows.append(
                {
                    "critic": name,
                    "threshold": choice.threshold,
                    "precision": choice.precision,
                    "recall": choice.recall,
                    "f1": choice.f1,
                    "kept": choice.kept,
                    "n": choice.n,
                    "note": choice.objective
                    + (f" >= {choice.target_precision:g}" if choice.target_precision is not None else ""),
                }
            )
    sections.append(
        ReportSection(
            title="Choosing a threshold",
            text=f"Keeping clips whose score is at least t, against labels >= {cfg.threshold:g} as good: the t that "
            + (
                "maximises F1."
                if cfg.objective == "f1"
                else f"gives the most recall at precision >= {cfg.target_precision:g}."
            ),
            table=choice_rows,
            figure=result.threshold_figure(),
        )
    )
    sections.append(settings_section(result.scores))
    sections.append(published_section(result.table))
    critics = [
        CriticScores(
            name=name,
            model=result.critics[name],
            rows=s.rows,
            skipped=s.skipped,
            metrics=result.metrics[name],
            groups=result.groups[name],
        )
        for name, s in result.scores.items()
    ]
    report_cfg = ReportConfig(
        out_path=result.out_dir / REPORT_NAME,
        title="Critic evaluation: " + ", ".join(result.critics),
        subtitle=f"{eval_data} · profile {cfg.profile} · mode {cfg.mode} · prompt {Path(resolve_prompt(cfg)).stem}"
        + "".join(f" · {n} calibrated with {c.path}" for n, c in result.applied_calibrations.items()),
        threshold=cfg.threshold,
        label_key=cfg.label_key if result.task == "pc" else cfg.sa_column,
        thumbnails=cfg.thumbnails,
    )
    extra = {
        "task": result.task,
        "tasks": {c: {t: s.to_dict() for t, s in suites.items()} for c, suites in result.task_metrics.items()},
        "threshold_curves": {n: (c.to_dict() if c else None) for n, c in result.thresholds.items()},
        "summary": result.summary(),
        "warnings": result.warnings(),
    }
    return write_report(critics, report_cfg, sections, extra=extra)
