"""The filtering stage behind ``plausibility score``: score clips, decide keep/reject at a threshold, measure against
labels when the clips have them, and write the HTML report — one function for the CLI and the notebooks.

``run_score(ScoreStageConfig) -> ScoreStageResult``; ``result.summary_lines()`` is what the command prints.
Scoring itself (cached, resumable, every skip recorded) is :func:`recipe_lib.inference.scoring.score_videos`; the
per-clip files and the manifest are :func:`recipe_lib.evaluation.filtering.write_filter_outputs`.

Tasks (:mod:`recipe_lib.tasks`): ``tasks`` lists what each clip is scored for (``pc`` by default; ``sa``, ``rule``),
one ``score_videos`` call per task into the same folder (one store; ``scores.csv`` for pc, ``scores_<task>.csv`` for
the others) with one loaded critic. The keep/reject manifest reads ``keep_on`` (``pc``, ``sa`` or ``joint``: both at
least the threshold); when pc and sa are both scored the per-clip joint goes to ``joint.csv`` and the joint metric into
the summary and ``evaluation_results.json``; rule judgements are measured against the rule columns.

With ``calibration`` (a file from ``plausibility calibrate``) p(1..5) are calibrated after scoring, and the expected
score, the score and every output (``scores.csv``, predictions, manifest, report) are computed from the calibrated
probabilities; ``results.sqlite`` keeps the critic's own, so the same store serves calibrated and uncalibrated runs.
``summary.json`` records the calibration applied (file, method, parameters) and the collapse check
(:mod:`recipe_lib.evaluation.collapse`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from recipe_lib.constants import DEFAULT_THRESHOLD, LABEL_COLUMN
from recipe_lib.evaluation.collapse import CollapseCheck, check_collapse
from recipe_lib.inference.score_config import ScoreConfig, ScoreResult
from recipe_lib.inference.scoring import score_videos
from recipe_lib.io import printable, writes_as
from recipe_lib.tasks import check_keep_on
from recipe_lib.validation import check_fields


def _opt(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class ScoreStageConfig:
    """What to score (``score``: clips, critic, settings; its ``task`` and ``prompt`` are set per task) and how to
    filter and report it."""

    score: ScoreConfig
    threshold: float = _opt(DEFAULT_THRESHOLD, "keep a clip when its expected score (else its score) is at least this")
    report: bool = _opt(True, "write OUT/report.html and OUT/evaluation_results.json")
    report_title: str | None = _opt(None, "title of the HTML report")
    label_column: str = _opt(LABEL_COLUMN, "label column when the clips' table has labels")
    tasks: tuple[str, ...] = ("pc",)  # pc, sa, rule (recipe_lib.tasks)
    keep_on: Literal["pc", "sa", "joint"] | None = _opt(
        None,
        "what the keep/reject manifest reads: pc, sa, or joint (both at least the threshold); default: pc when "
        "scored, else sa",
    )
    sa_column: str = _opt("sa", "task sa: label column")
    prompts: dict[str, str] = dataclasses.field(default_factory=dict)  # task -> prompt (pc: score.prompt)
    calibration: Path | None = _opt(
        None, "calibrate p(1..5) with this file from `plausibility calibrate` before deciding (expected mode)"
    )

    def __post_init__(self) -> None:
        check_fields(self)
        check_keep_on(self.keep_on, self.tasks)


@dataclasses.dataclass
class ScoreStageResult:
    scores: ScoreResult  # the keep-on task's scores (the first task's when nothing is kept on)
    filtered: Any  # recipe_lib.evaluation.filtering.FilterResult; None when no 1-5 task is scored (rule alone)
    suite: (
        Any | None
    )  # recipe_lib.evaluation.metrics.MetricSuite against the labels of the reported task, when labelled
    report: Any | None  # recipe_lib.evaluation.report.ReportResult
    threshold: float
    by_task: dict[str, ScoreResult] = dataclasses.field(default_factory=dict)
    suites: dict[str, Any] = dataclasses.field(default_factory=dict)  # task (and "joint") -> its metric suite
    keep_on: str | None = "pc"
    joint: list[dict[str, Any]] | None = None  # per-clip joint records, when pc and sa are both scored
    joint_csv: Path | None = None
    collapse: Any = None  # recipe_lib.evaluation.collapse.CollapseCheck
    calibration: Any = None  # recipe_lib.evaluation.calibration.Calibration applied, or None
    n_uncalibrated: int = 0  # rows without p(1..5) left as they were (unparsed)
    calibration_warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether anything was scored (a run that scored nothing exits with status 1)."""
        return any(r.rows for r in (self.by_task or {"": self.scores}).values())

    def summary_lines(self) -> list[str]:
        results = self.by_task or {self.scores.task: self.scores}
        lines: list[str] = []
        for task, result in results.items():
            lines += scoring_lines(result, prefix=f"[{task}] " if len(results) > 1 else "")
        if self.calibration is not None:
            lines.append(
                f"calibrated with {self.calibration.path} ({self.calibration.describe()}); "
                f"{self.n_uncalibrated} clip(s) without p(1..5) left as scored"
            )
            lines += [f"  warning: {w}" for w in self.calibration_warnings]
        if self.collapse is not None and self.collapse.collapsed:
            lines.append(f"  warning: {self.collapse.message()}")
        if self.filtered is not None:
            c = self.filtered.counts
            basis = f" (keep on {self.keep_on})" if self.keep_on != "pc" else ""
            lines.append(
                f"at threshold {self.threshold:g}{basis}: keep {c['keep']}, reject {c['reject']}, "
                f"unparsed {c['unparsed']}, skipped {c['skipped']}"
            )
        for task, suite in self.suites.items():
            lines.append(task_metric_line(task, suite, prefix=f"[{task}] " if len(self.suites) > 1 else ""))
        f = self.filtered
        if f is not None:
            lines.append(f"results: {f.predictions_csv}, {f.predictions_jsonl}, manifest: {f.manifest_csv}")
        if self.joint_csv is not None:
            lines.append(f"joint per clip: {self.joint_csv}")
        if self.report is not None:
            lines.append(f"report: {self.report.html}")
        return lines


def task_metric_line(task: str, suite: Any, prefix: str = "") -> str:
    """One line of a task's metrics against its labels (pc/sa suite, the joint metric, the rule judgements)."""

    def iv(name: str) -> str:
        lo, hi = suite.intervals[name]
        return f"[{lo:.3f}, {hi:.3f}]" if lo == lo else "[–]"

    m = suite.values
    if task == "joint":
        text = f"joint (sa and pc >= {suite.threshold:g}): {m['joint_rate']:.3f} {iv('joint_rate')} of {suite.n} clips"
        if suite.n_labelled:
            text += (
                f"; labels {m['label_joint_rate']:.3f} {iv('label_joint_rate')} of {suite.n_labelled}; "
                f"per-clip accuracy {m['accuracy']:.3f} f1 {m['f1']:.3f}"
            )
        return prefix + text
    if task == "rule":
        counts = ", ".join(f"{k} {v}" for k, v in suite.label_counts.items())
        return (
            f"{prefix}against rule labels: n={suite.n} coverage={suite.coverage:.2f} accuracy={m['accuracy']:.3f} "
            f"{iv('accuracy')} (majority {suite.majority_accuracy:.3f}); labels: {counts}"
        )
    return (
        f"{prefix}against labels: n={suite.n} coverage={suite.coverage:.2f} accuracy={m['accuracy']:.3f} "
        f"within1={m['within1']:.3f} pearson={m['pearson']:.3f} spearman={m['spearman']:.3f}"
    )


def scoring_lines(result: ScoreResult, prefix: str = "") -> list[str]:
    """How many clips were scored, cached, unparsed and skipped, and why each skip happened."""
    s = result.summary()
    noun = "rule judgements" if result.task == "rule" else "clips"
    lines = [
        f"{prefix}scored {s['scored']} of {s['inputs']} {noun} ({s['scored_this_run']} now, {s['from_cache']} "
        f"cached), {s['unparsed']} unparsed, {s['skipped']} skipped, {s['seconds']:.1f} s"
    ]
    if result.protocol is not None:
        lines.append(f"settings: {result.protocol.describe()}")
    lines += [f"  warning: {printable(w)}" for w in result.warnings]
    shown = result.skipped[:MAX_SKIP_LINES]
    lines += [f"  skipped {printable(skip['video'])}: {printable(skip['reason'])}" for skip in shown]
    if len(result.skipped) > len(shown):  # a table of a million rows must not print a million lines
        import itertools
        from collections import Counter

        rest = itertools.islice(result.skipped, len(shown), None)  # streamed: the skips may be a view of the store
        reasons = Counter(str(skip["reason"]).split(":", 1)[0] for skip in rest)
        top = ", ".join(f"{printable(r)} x{n}" for r, n in reasons.most_common(3))
        lines.append(f"  ... and {len(result.skipped) - len(shown)} more skipped ({top}): see skipped.jsonl")
    return lines


MAX_SKIP_LINES = 200  # skipped clips listed one a line; the rest are counted by reason (all are in skipped.jsonl)


class SharedCritic:
    """One critic for every task of a run: loaded when the first clip needs the model (a fully cached run loads
    nothing), then asked each task's prompt (:meth:`for_prompt`)."""

    def __init__(self, cfg: ScoreConfig, loaded: Any = None) -> None:
        self.cfg = cfg
        self.loaded = loaded
        self._lock = threading.Lock()

    def base(self) -> Any:
        with self._lock:
            if self.loaded is None:
                from recipe_lib.inference.plan import resolve_settings
                from recipe_lib.inference.scorers import make_scorer
                from recipe_lib.prompts import load_prompt

                cfg, _ = resolve_settings(self.cfg)  # the critic's video/sampling settings where none were given
                self.loaded = make_scorer(cfg, load_prompt(cfg.prompt))
            return self.loaded

    def for_prompt(self, prompt: Any) -> TaskScorer:
        return TaskScorer(self, prompt)


class TaskScorer:
    """The shared critic asking one task's prompt (``prepare`` runs on worker threads; the copy is made once)."""

    def __init__(self, shared: SharedCritic, prompt: Any) -> None:
        self.shared = shared
        self.prompt = prompt
        self._scorer: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._scorer is None:
                scorer = copy.copy(self.shared.base())
                scorer.prompt = self.prompt
                self._scorer = scorer
            return self._scorer

    def prepare(self, item: dict[str, Any]) -> Any:
        return self._get().prepare(item)

    def score_batch(self, batch: list[Any]) -> list[dict[str, Any]]:
        return self._get().score_batch(batch)


def check_task_inputs(configs: dict[str, ScoreConfig]) -> None:
    """Before anything is scored: every task other than pc can be served by the inputs (a caption column for sa,
    rule columns for rule), so a run of ``--task pc,sa`` does not fail after the pc scoring. The inputs are read in
    chunks, as scoring reads them."""
    from recipe_lib.inference.plan import iter_inputs
    from recipe_lib.tasks import TaskColumns, prepare_items

    others = {task: tc for task, tc in configs.items() if task != "pc"}
    if not others:
        return
    first = next(iter(others.values()))
    left = first.limit
    for items in iter_inputs(first.inputs, first.split, first.label_column, False):
        if left is not None:
            items = items[:left]
            left -= len(items)
        for task, tc in others.items():
            prepare_items(task, items, TaskColumns(caption=tc.caption_column))
        if left is not None and left <= 0:
            return


@writes_as("score")
def run_score(cfg: ScoreStageConfig, progress: bool = True, scorer: Any = None) -> ScoreStageResult:
    """Score (every task), filter, measure and report (see the module docstring)."""
    from recipe_lib.config import to_dict
    from recipe_lib.evaluation.filtering import (
        FILTER_FILES,
        FilterResult,
        joint_records,
        write_filter_outputs,
        write_joint_filter_outputs,
    )
    from recipe_lib.evaluation.metrics import (
        MetricSuite,
        any_label,
        joint_suite,
        rule_suite_from_rows,
        suite_from_rows,
    )
    from recipe_lib.evaluation.report import CriticScores, ReportConfig, ReportResult, write_report
    from recipe_lib.inference.plan import score_files
    from recipe_lib.inference.record import score_columns
    from recipe_lib.io import atomic_write_csv, claim_outputs
    from recipe_lib.prompts import load_prompt
    from recipe_lib.tasks import check_keep_on, check_task_prompt, parse_tasks, task_prompt
    from recipe_lib.video import file_digest

    sc = cfg.score
    out = Path(sc.out_dir)
    tasks = parse_tasks(list(cfg.tasks))
    calibration = _load_checked_calibration(cfg)  # a bad file fails before any clip is scored
    keep_on = check_keep_on(cfg.keep_on, tasks)
    labels = {"pc": cfg.label_column, "sa": cfg.sa_column}
    configs: dict[str, ScoreConfig] = {}
    for task in tasks:
        prompt = task_prompt(task, cfg.prompts.get(task), sc.prompt)
        check_task_prompt(task, load_prompt(prompt))  # every prompt is checked before anything is scored
        configs[task] = dataclasses.replace(
            sc,
            task=task,
            prompt=prompt,
            label_column=labels.get(task, cfg.label_column),
            require_label_column=sc.require_label_column and task == "pc",
        )
    # Every file of the stage is checked before anything is scored (a foreign manifest.csv fails now, not after).
    both = "pc" in tasks and "sa" in tasks
    names = [n for t in tasks for n in score_files(t)]
    report_files = ReportConfig(out_path=out / "report.html").output_names() if cfg.report and keep_on else []
    claim_outputs(out, [*names, *(FILTER_FILES if keep_on else ()), *report_files, *(["joint.csv"] if both else [])])
    check_task_inputs(configs)
    results: dict[str, ScoreResult] = {}
    shared = SharedCritic(configs[tasks[0]], scorer)
    for task, tc in configs.items():
        task_scorer = scorer
        if tc.engine == "local" and len(configs) > 1:
            task_scorer = shared.for_prompt(load_prompt(tc.prompt))
        results[task] = score_videos(tc, progress=progress, scorer=task_scorer)
    # A calibration file is fitted on physics scores: it applies to the pc task.
    n_uncalibrated = 0
    if calibration is not None and "pc" in results:
        from recipe_lib.inference.score_config import results_frame

        rows, n_uncalibrated = calibration.apply_rows(results["pc"].rows)
        results["pc"] = dataclasses.replace(results["pc"], rows=rows)
        scores_csv = next(name for name in score_files("pc") if name.endswith(".csv"))
        atomic_write_csv(out / scores_csv, results_frame(rows, cfg.label_column))  # calibrated like the rest
    # What the stage's files are written from: a rerun with the same runs and settings keeps them (kept.py).
    kept_basis = {
        "runs": {task: result.digest for task, result in results.items()},
        "stage": to_dict(cfg),
        "calibration": file_digest(cfg.calibration) if cfg.calibration is not None else None,
    }
    may_keep = all(result.reusable for result in results.values())  # nothing scored now, no damaged row
    # The decisions read fewer settings than the report (its title, say): a report turned on or off keeps them.
    decided = ("threshold", "label_column", "sa_column", "tasks", "keep_on", "calibration")
    filter_basis = {**kept_basis, "stage": {k: v for k, v in kept_basis["stage"].items() if k in decided}}
    columns: dict[str, dict[str, list[Any]]] = {}  # per task: what the checks and metrics read, read once

    def read(task: str) -> dict[str, list[Any]]:
        if task not in columns:
            columns[task] = score_columns(results[task].rows, labels.get(task, cfg.label_column))
        return columns[task]

    def checks() -> dict[str, Any]:
        """The collapse check and the 1-5 tasks' metric suites, from one read of the columns they need."""
        task = "pc" if "pc" in results else tasks[0]
        collapse = check_collapse(results[task].rows, labels.get(task, cfg.label_column), columns=read(task))
        found = {t: suite_from_rows(r.rows, labels[t], threshold=cfg.threshold, columns=read(t))
                 for t, r in results.items() if t != "rule" and any_label(read(t)["label"])}  # fmt: skip
        return {"collapse": collapse, "suites": found}

    # A rerun of the same runs keeps them too: a million rows are not read again to print the same numbers.
    checked = _kept_or_written(
        out,
        "checks",
        filter_basis,
        may_keep,
        [],
        checks,
        lambda c: {"collapse": c["collapse"].to_dict(), "suites": {t: v.to_dict() for t, v in c["suites"].items()}},
        lambda kept: {
            "collapse": CollapseCheck.from_dict(kept["collapse"]),
            "suites": {t: MetricSuite.from_dict(v) for t, v in kept["suites"].items()},
        },
    )
    collapse = checked["collapse"]
    warnings = _calibration_warnings(calibration, sc) if calibration is not None else []
    _extend_summary(out, calibration, n_uncalibrated, collapse, warnings)

    suites: dict[str, Any] = {}
    for task, result in results.items():
        if task == "rule":
            if result.rows:
                suites["rule"] = rule_suite_from_rows(result.rows)
        elif task in checked["suites"]:
            suites[task] = checked["suites"][task]
    joint, joint_csv = None, None
    if both:
        joint = joint_records(
            results["pc"].rows,
            results["sa"].rows,
            results["pc"].skipped,
            results["sa"].skipped,
            cfg.label_column,
            cfg.sa_column,
            cfg.threshold,
        )
        suites["joint"] = joint_suite(joint, threshold=cfg.threshold)
        import pandas as pd

        joint_csv = atomic_write_csv(out / "joint.csv", pd.DataFrame(joint))
    filtered = None
    if keep_on == "joint":
        skipped = [*results["pc"].skipped, *results["sa"].skipped]
        filtered = write_joint_filter_outputs(joint or [], skipped, out, cfg.threshold)
    elif keep_on is not None:
        basis = results[keep_on]
        filtered = _kept_or_written(
            out,
            "filter",
            filter_basis,
            may_keep,
            [out / name for name in FILTER_FILES],
            lambda: write_filter_outputs(basis.rows, basis.skipped, out, cfg.threshold, labels[keep_on]),
            lambda f: {"counts": f.counts},
            lambda kept: FilterResult(*(out / name for name in FILTER_FILES), float(cfg.threshold), kept["counts"], []),
        )
    shown = "pc" if keep_on == "joint" else keep_on
    primary = results[shown] if shown else results[tasks[0]]
    report = None
    if cfg.report and shown:
        critic = CriticScores(
            name=Path(sc.model).name or sc.model,
            model=sc.model,
            rows=primary.rows,
            skipped=primary.skipped,
            metrics=suites.get(shown),
        )
        n = len(primary.rows) + len(primary.skipped)
        settings = f" · {primary.protocol.describe()}" if primary.protocol else ""
        report_cfg = ReportConfig(
            out_path=out / "report.html",
            title=cfg.report_title or f"Plausibility scores: {n} clips",
            subtitle=f"critic {sc.model}, prompt {configs[shown].prompt}, mode {sc.mode}, task {shown}{settings}"
            + (f", calibrated with {calibration.path} ({calibration.describe()})" if calibration else ""),
            threshold=cfg.threshold,
            label_key=labels[shown],
            workers=sc.workers,
        )
        extra = {
            "tasks": {t: s.to_dict() for t, s in suites.items() if t != shown},
            "keep_on": keep_on,
            "settings": primary.protocol.to_json() if primary.protocol else None,
        }
        json_path = report_cfg.out_path.with_name(report_cfg.json_name)
        report = _kept_or_written(
            out,
            "report",
            kept_basis,
            may_keep,
            [report_cfg.out_path, json_path],
            lambda: write_report([critic], report_cfg, task_sections(suites, shown), extra=extra),
            lambda _: {},
            lambda _: ReportResult(report_cfg.out_path, json_path, json.loads(json_path.read_text(encoding="utf-8"))),
        )
    return ScoreStageResult(
        primary,
        filtered,
        suites.get(shown) if shown else None,
        report,
        cfg.threshold,
        by_task=results,
        suites=suites,
        keep_on=keep_on,
        joint=joint,
        joint_csv=joint_csv,
        collapse=collapse,
        calibration=calibration,
        n_uncalibrated=n_uncalibrated,
        calibration_warnings=warnings,
    )


def _kept_or_written(
    out: Path,
    name: str,
    basis: dict[str, Any],
    may_keep: bool,
    paths: list[Path],
    write: Callable[[], Any],
    record: Callable[[Any], dict[str, Any]],
    rebuild: Callable[[dict[str, Any]], Any],
) -> Any:
    """``write()``'s result, or, when ``may_keep`` and ``paths`` were written from this ``basis`` by an earlier run
    and are unchanged since (:mod:`recipe_lib.inference.kept`), the result ``rebuild`` makes from what ``record`` kept
    of it."""
    from recipe_lib.inference.kept import keep_exports, kept_exports

    kept = kept_exports(out, name, basis, paths) if may_keep else None
    if kept is not None:
        return rebuild(kept)
    result = write()
    keep_exports(out, name, basis, paths, record(result))
    return result


def task_sections(suites: dict[str, Any], shown: str | None) -> list[Any]:
    """Report sections for the tasks the report's main table does not show (another 1-5 task, joint, rules)."""
    from recipe_lib.evaluation.report import ReportSection

    sections = []
    for task, suite in suites.items():
        if task == shown:
            continue
        if task == "joint":
            text = (
                f"Share of clips the critic scores at least {suite.threshold:g} for both semantic adherence and "
                "physical commonsense (VideoPhy-2's joint), beside the human labels' share, with bootstrap intervals."
            )
            table = [{"metric": k, "value": v, "low": suite.intervals[k][0], "high": suite.intervals[k][1]}
                     for k, v in suite.values.items()]  # fmt: skip
        elif task == "rule":
            text = "One judgement per listed physical rule against the column the rule came from."
            table = [
                {"label": label, **{c: int(x) for c, x in zip([*suite.label_counts, "unparsed"], row)}}
                for label, row in zip(suite.label_counts, suite.confusion.tolist())
            ]
        else:
            text = f"Task {task}: the critic's 1-5 score against the {task} label."
            table = [{"metric": k, "value": v} for k, v in suite.values.items()]
        sections.append(ReportSection(title=f"Task {task}", text=text, table=table))
    return sections


def check_calibration_option(path: str | Path | None, mode: str) -> Any:
    """The calibration file read and checked (None when not given); an error for generate mode, which has no
    p(1..5)."""
    if path is None:
        return None
    from recipe_lib.errors import ConfigError
    from recipe_lib.evaluation.calibration import load_calibration

    if mode != "expected":
        raise ConfigError(
            "--calibration applies to p(1..5), which only expected mode gives",
            hint="drop --mode generate, or drop --calibration",
        )
    return load_calibration(path)


def _load_checked_calibration(cfg: ScoreStageConfig) -> Any:
    return check_calibration_option(cfg.calibration, cfg.score.mode)


def _calibration_warnings(calibration: Any, sc: ScoreConfig) -> list[str]:
    """A calibration fitted for another critic, prompt or scoring is applied as asked, with a warning."""
    fitted = calibration.fitted_on or {}
    lines = []
    for key, now in (("model", sc.model), ("prompt", Path(str(sc.prompt)).stem)):
        then = fitted.get(key)
        if then and str(then) != str(now) and Path(str(then)).stem != Path(str(now)).stem:
            lines.append(f"{calibration.path} was fitted for {key} {then}, this run uses {now}")
    return lines


def _extend_summary(out: Path, calibration: Any, n_uncalibrated: int, collapse: Any, warnings: list[str]) -> None:
    """Add the calibration applied and the collapse check to the scoring stage's ``summary.json``."""
    import json

    from recipe_lib.io import atomic_write_json

    path = out / "summary.json"
    summary = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    summary["calibration"] = (
        {"applied": True, **calibration.summary(), "uncalibrated_rows": n_uncalibrated, "warnings": warnings}
        if calibration is not None
        else {"applied": False}
    )
    summary["collapse"] = collapse.to_dict()
    atomic_write_json(path, summary)
