"""The filtering stage behind ``plausibility score``: score clips, decide keep/reject at a threshold, measure against
labels when the clips have them, and write the HTML report — one function for the CLI and the notebooks.

``run_score_stage(ScoreStageConfig) -> ScoreStageResult``; ``result.summary_lines()`` is what the command prints.
Scoring itself (cached, resumable, every skip recorded) is :func:`recipe_lib.inference.scoring.score_videos`; the
per-clip files and the manifest are :func:`recipe_lib.filtering.write_filter_outputs`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

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


@dataclasses.dataclass
class ScoreStageResult:
    scores: ScoreResult
    filtered: Any  # recipe_lib.filtering.FilterResult
    suite: Any | None  # recipe_lib.metrics.MetricSuite against the labels, when the clips have labels
    report: Any | None  # recipe_lib.report.ReportResult
    threshold: float

    @property
    def ok(self) -> bool:
        """Whether anything was scored (a run that scored nothing exits with status 1)."""
        return bool(self.scores.rows)

    def summary_lines(self) -> list[str]:
        lines = scoring_lines(self.scores)
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
    if result.protocol is not None:
        lines.append(f"settings: {result.protocol.describe()}")
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
    # Every file of the stage is checked before anything is scored (a foreign manifest.csv fails now, not after).
    report_files = ReportConfig(out_path=out / "report.html").output_names() if cfg.report else []
    claim_outputs(out, [*SCORE_FILES, *FILTER_FILES, *report_files])
    result = score_videos(sc, progress=progress, scorer=scorer)
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
        settings = f" · {result.protocol.describe()}" if result.protocol else ""
        report = write_report(
            [critic],
            ReportConfig(
                out_path=out / "report.html",
                title=cfg.report_title or f"Plausibility scores: {n} clips",
                subtitle=f"critic {sc.model}, prompt {sc.prompt}, mode {sc.mode}{settings}",
                threshold=cfg.threshold,
                label_key=cfg.label_column,
                workers=sc.workers,
            ),
            extra={"settings": result.protocol.to_json() if result.protocol else None},
        )
    return ScoreStageResult(result, filtered, suite, report, cfg.threshold)
