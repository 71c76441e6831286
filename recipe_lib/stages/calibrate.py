"""The calibration stage behind ``plausibility calibrate``: score a labelled calibration split (cached, like every
scoring run), fit a calibration map on it and save it as JSON for ``plausibility score --calibration FILE``.

``run_calibrate(CalibrateConfig) -> CalibrateResult``; the maps and the measurements are
:mod:`recipe_lib.evaluation.calibration`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from recipe_lib.constants import DEFAULT_THRESHOLD, LABEL_COLUMN
from recipe_lib.errors import ConfigError
from recipe_lib.evaluation.calibration import (
    ECE_BINS,
    MIN_CALIBRATION_CLIPS,
    Calibration,
    CriticCalibration,
    fit_calibration,
    measure_calibration,
)
from recipe_lib.inference.score_config import ScoreConfig, ScoreResult
from recipe_lib.inference.scoring import score_videos
from recipe_lib.io import claim_outputs, writes_as
from recipe_lib.validation import check_fields


def _opt(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class CalibrateConfig:
    """``score`` scores the labelled calibration split (its ``out_dir`` caches the rows); the map goes to
    ``out_path``."""

    score: ScoreConfig
    out_path: Path = dataclasses.field(metadata={"help": "the calibration file to write (.json)"})
    method: Literal["temperature", "isotonic"] = _opt(
        "temperature",
        "temperature: one parameter, keeps the most likely digit; isotonic: monotone map of P(good)",
    )
    label_column: str = _opt(LABEL_COLUMN, "the label column of the calibration data")
    threshold: float = _opt(DEFAULT_THRESHOLD, "good = label (and digit) at least this: what P(good) means")
    n_bins: int = ECE_BINS
    min_clips: int = MIN_CALIBRATION_CLIPS

    def __post_init__(self) -> None:
        check_fields(self)


@dataclasses.dataclass
class CalibrateResult:
    calibration: Calibration
    path: Path
    scores: ScoreResult
    before: CriticCalibration  # on the calibration split, uncalibrated
    after: CriticCalibration  # the same clips, calibrated (in-sample: optimistic)

    def summary_lines(self) -> list[str]:
        from recipe_lib.stages.score import scoring_lines

        lines = scoring_lines(self.scores)
        lines.append(f"fitted {self.calibration.describe()} on {self.before.n_with_probs} labelled clips")
        if self.calibration.note:
            lines.append(f"  note: {self.calibration.note}")
        if self.before.note:
            lines.append(f"  note: {self.before.note}")
        pairs = (
            ("p(1..5)", self.before.multiclass, self.after.multiclass),
            ("P(good)", self.before.good, self.after.good),
        )
        for label, b, a in pairs:
            if b is not None and a is not None:
                lines.append(f"  ECE of {label} on the calibration split: {b.ece:.3f} -> {a.ece:.3f} (in-sample)")
        lines.append(f"calibration: {self.path}")
        lines.append(f"apply it with: plausibility score VIDEOS --out DIR --model ... --calibration {self.path}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "calibration": self.calibration.to_dict()}


@writes_as("calibrate")
def run_calibrate(cfg: CalibrateConfig, progress: bool = True, scorer: Any = None) -> CalibrateResult:
    """Score the calibration split, fit, save (see the module docstring)."""
    if cfg.score.mode != "expected":
        raise ConfigError(
            "calibration needs p(1..5), which only expected mode gives", hint="drop --mode generate (or pass expected)"
        )
    out = Path(cfg.out_path)
    if out.suffix.lower() != ".json":
        raise ConfigError(f"--out {out} should name a .json file", hint="e.g. --out runs/cr1_calibration.json")
    claim_outputs(out.parent, [out.name])  # before any work: no link followed, no foreign file replaced
    scores = score_videos(cfg.score, progress=progress, scorer=scorer)
    cal = fit_calibration(scores.rows, cfg.method, cfg.label_column, cfg.threshold, cfg.min_clips, cfg.n_bins)
    cal.fitted_on["data"] = [str(i) for i in cfg.score.inputs]
    cal.save(out)
    cal.path = str(out)
    boot = {"threshold": cfg.threshold, "n_bins": cfg.n_bins, "n_boot": 0}
    before = measure_calibration(scores.rows, cfg.label_column, **boot)
    after = measure_calibration(cal.apply_rows(scores.rows)[0], cfg.label_column, **boot)
    return CalibrateResult(cal, out, scores, before, after)
