"""The filtering stage behind ``plausibility score``: score clips, decide keep/reject at a threshold, measure against
labels when the clips have them, and write the HTML report — one function for the CLI and the notebooks.

``run_score_stage(ScoreStageConfig) -> ScoreStageResult``; ``result.summary_lines()`` is what the command prints.
Scoring itself (cached, resumable, every skip recorded) is :func:`recipe_lib.inference.scoring.score_videos`; the
per-clip files and the manifest are :func:`recipe_lib.filtering.write_filter_outputs`.

With ``calibration`` (a file from ``plausibility calibrate``) p(1..5) are calibrated after scoring, and the expected
score, the score and every output (``scores.csv``, predictions, manifest, report) are computed from the calibrated
probabilities; ``results.sqlite`` keeps the critic's own, so the same store serves calibrated and uncalibrated runs.
``summary.json`` records the calibration applied (file, method, parameters) and the collapse check
(:mod:`recipe_lib.collapse`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from recipe_lib.collapse import check_collapse
from recipe_lib.constants import DEFAULT_THRESHOLD, LABEL_COLUMN
from recipe_lib.inference.scoring import ScoreConfig, ScoreResult, score_videos
from recipe_lib.io import printable, writes_as


@dataclasses.dataclass
class ScoreStageConfig:
    """What to score (``score``) and how to filter and report it."""

    score: ScoreConfig
    threshold: float = DEFAULT_THRESHOLD  # keep a clip when its expected score (else its score) is at least this
    report: bool = True  # write report.html and evaluation_results.json
    report_title: str | None = None
    label_column: str = LABEL_COLUMN
    calibration: str | Path | None = None  # a calibration JSON applied to p(1..5) (plausibility calibrate)


@dataclasses.dataclass
class ScoreStageResult:
    scores: ScoreResult
    filtered: Any  # recipe_lib.filtering.FilterResult
    suite: Any | None  # recipe_lib.metrics.MetricSuite against the labels, when the clips have labels
    report: Any | None  # recipe_lib.report.ReportResult
    threshold: float
    collapse: Any = None  # recipe_lib.collapse.CollapseCheck
    calibration: Any = None  # recipe_lib.calibration.Calibration applied, or None
    n_uncalibrated: int = 0  # rows without p(1..5) left as they were (unparsed)
    calibration_warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether anything was scored (a run that scored nothing exits with status 1)."""
        return bool(self.scores.rows)

    def summary_lines(self) -> list[str]:
        lines = scoring_lines(self.scores)
        if self.calibration is not None:
            lines.append(
                f"calibrated with {self.calibration.path} ({self.calibration.describe()}); "
                f"{self.n_uncalibrated} clip(s) without p(1..5) left as scored"
            )
            lines += [f"  warning: {w}" for w in self.calibration_warnings]
        if self.collapse is not None and self.collapse.collapsed:
            lines.append(f"  warning: {self.collapse.message()}")
        c = self.filtered.counts
        lines.append(
            f"at threshold {self.threshold:g}: keep {c['keep']}, reject {c['reject']}, "
            f"unparsed {c['unparsed']}, skipped {c['skipped']}"
        )
        if self.suite is not None:
            m = self.suite.values
            lines.append(
                f"against labels: n={self.suite.n} coverage={self.suite.coverage:.2f} accuracy={m['accuracy']:.3f} "
                f"within1={m['within1']:.3f} pearson={m['pearson']:.3f} spearman={m['spearman']:.3f}"
            )
        f = self.filtered
        lines.append(f"results: {f.predictions_csv}, {f.predictions_jsonl}, manifest: {f.manifest_csv}")
        if self.report is not None:
            lines.append(f"report: {self.report.html}")
        return lines


def scoring_lines(result: ScoreResult) -> list[str]:
    """How many clips were scored, cached, unparsed and skipped, and why each skip happened."""
    s = result.summary()
    lines = [
        f"scored {s['scored']} of {s['inputs']} clips ({s['scored_this_run']} now, {s['from_cache']} cached), "
        f"{s['unparsed']} unparsed, {s['skipped']} skipped, {s['seconds']:.1f} s"
    ]
    lines += [f"  warning: {printable(w)}" for w in result.warnings]
    return lines + [f"  skipped {printable(skip['video'])}: {printable(skip['reason'])}" for skip in result.skipped]


@writes_as("score")
def run_score_stage(cfg: ScoreStageConfig, progress: bool = True, scorer: Any = None) -> ScoreStageResult:
    """Score, filter, measure and report (see the module docstring)."""
    from recipe_lib.filtering import FILTER_FILES, write_filter_outputs
    from recipe_lib.inference.scoring import SCORE_FILES
    from recipe_lib.io import claim_outputs
    from recipe_lib.metrics import labelled_rows, suite_from_rows
    from recipe_lib.report import CriticScores, ReportConfig, write_report

    sc = cfg.score
    out = Path(sc.out_dir)
    calibration = _load_checked_calibration(cfg)  # a bad file fails before any clip is scored
    # Every file of the stage is checked before anything is scored (a foreign manifest.csv fails now, not after).
    report_files = ReportConfig(out_path=out / "report.html").output_names() if cfg.report else []
    claim_outputs(out, [*SCORE_FILES, *FILTER_FILES, *report_files])
    result = score_videos(sc, progress=progress, scorer=scorer)
    n_uncalibrated = 0
    if calibration is not None:
        from recipe_lib.inference.scoring import results_frame
        from recipe_lib.io import atomic_write_csv

        rows, n_uncalibrated = calibration.apply_rows(result.rows)
        result = dataclasses.replace(result, rows=rows)
        atomic_write_csv(out / "scores.csv", results_frame(rows))  # the per-clip table, calibrated like the rest
    collapse = check_collapse(result.rows, cfg.label_column)
    warnings = _calibration_warnings(calibration, sc) if calibration is not None else []
    _extend_summary(out, calibration, n_uncalibrated, collapse, warnings)
    filtered = write_filter_outputs(result.rows, result.skipped, out, cfg.threshold, cfg.label_column)
    suite = None
    if labelled_rows(result.rows, cfg.label_column):
        suite = suite_from_rows(result.rows, cfg.label_column, threshold=cfg.threshold)
    report = None
    if cfg.report:
        critic = CriticScores(
            name=Path(sc.model).name or sc.model,
            model=sc.model,
            rows=result.rows,
            skipped=result.skipped,
            metrics=suite,
        )
        n = len(result.rows) + len(result.skipped)
        report = write_report(
            [critic],
            ReportConfig(
                out_path=out / "report.html",
                title=cfg.report_title or f"Plausibility scores: {n} clips",
                subtitle=f"critic {sc.model}, prompt {sc.prompt}, mode {sc.mode}"
                + (f", calibrated with {calibration.path} ({calibration.describe()})" if calibration else ""),
                threshold=cfg.threshold,
                label_key=cfg.label_column,
                workers=sc.workers,
            ),
        )
    return ScoreStageResult(
        result, filtered, suite, report, cfg.threshold, collapse, calibration, n_uncalibrated, warnings
    )


def check_calibration_option(path: str | Path | None, mode: str) -> Any:
    """The calibration file read and checked (None when not given); an error for generate mode, which has no
    p(1..5)."""
    if path is None:
        return None
    from recipe_lib.calibration import load_calibration
    from recipe_lib.errors import ConfigError

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
