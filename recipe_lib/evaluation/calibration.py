"""Calibration of a critic's p(1..5): measure it and correct it.

**Measure** (:func:`measure_calibration`): on labelled clips scored in ``expected`` mode,

* against **graded** labels (any label 2-4 present), the top-label reliability of p(1..5): clips binned by their
  largest probability, each bin's mean probability against the share of clips whose most likely digit equals the label;
  the **expected calibration error** (ECE) is the clip-weighted mean gap over :data:`ECE_BINS` equal-width bins (Guo et
  al. 2017), with the multiclass Brier score and negative log-likelihood beside it;
* against the **good-vs-bad** label (label >= threshold, 4 by default), the reliability of P(good) = the probability of
  the digits at or above the threshold (p(4) + p(5)): binned by P(good), each bin's mean P(good) against the share of
  good clips; ECE, Brier score and log loss.

Binary labels (every label 1 or 5, as in the demo and a team's 0/1 sheet scaled to 1/5) cannot measure p(1..5) as a
five-way forecast: a critic answering 2, 3 or 4 is never right, whatever its confidence, so only P(good) is measured and
the result says why. Every ECE has a seeded bootstrap interval, like the other metrics. Rows without p(1..5) (generate
mode, unparsed answers) are counted, not measured.

**Correct** (:func:`fit_calibration`): a map fitted on a labelled *calibration* split (never the test split), saved as a
small JSON file (:meth:`Calibration.save`) and applied to later runs (``plausibility score --calibration FILE``,
``plausibility evaluate --calibration NAME=FILE``):

* ``temperature`` (default): p(s) proportional to p(s)^(1/T) — softmax of the digit logits divided by T — with T
  minimising the negative log-likelihood of the graded label (or the log loss of P(good) when the labels are binary).
  One parameter, so it cannot overfit a few hundred clips, and the most likely digit never changes; the expected score
  and P(good) do.
* ``isotonic``: scikit-learn's isotonic regression of the good-vs-bad label on P(good); p(1..5) is then rescaled
  within the good and the bad digits so that they sum to the calibrated P(good). More flexible (any monotone map), so
  it wants more calibration clips; it may change the most likely digit.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from recipe_lib.constants import DEFAULT_THRESHOLD, LABEL_COLUMN, SCORE_VALUES
from recipe_lib.errors import ConfigError, DataError
from recipe_lib.inference.record import label_of

ECE_BINS = 10  # equal-width probability bins of the reliability diagrams and the ECE
CALIBRATION_METHODS = ("temperature", "isotonic")
CALIBRATION_KIND = "plausibility-calibration"
CALIBRATION_VERSION = 1
MIN_CALIBRATION_CLIPS = 20  # labelled clips with p(1..5) needed to fit a calibration
TEMPERATURE_BOUNDS = (0.01, 100.0)  # the search range of T
MAX_CALIBRATION_BYTES = 16 * 1024**2  # an isotonic map has at most a few thousand knots
_EPS = 1e-12
_V = np.asarray(SCORE_VALUES, dtype=float)

LabelKind = Literal["graded", "binary"]


# ---------------------------------------------------------------------------------------------------------------------
# Reading probabilities and labels off scored rows
# ---------------------------------------------------------------------------------------------------------------------


def row_probs(row: dict[str, Any]) -> np.ndarray | None:
    """p(1..5) of a scored row, renormalised; None when the row has none (generate mode, unparsed, damaged)."""
    probs = row.get("probs")
    if probs is None or len(probs) != 5:
        return None
    try:
        p = np.asarray([float(x) for x in probs], dtype=float)
    except (TypeError, ValueError):
        return None
    if not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        return None
    return p / p.sum()


def good_mask(threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Which of the digits 1-5 count as good (at least ``threshold``)."""
    return threshold <= _V


def p_good(probs: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """P(good) = the probability of the digits at or above ``threshold`` (p(4) + p(5) at the default 4)."""
    return np.asarray(probs, dtype=float)[..., good_mask(threshold)].sum(-1)


def label_kind(labels: Sequence[int]) -> LabelKind:
    """``binary`` when every label is 1 or 5 (a good/bad decision written on the 1-5 scale), else ``graded``."""
    return "binary" if set(int(v) for v in labels) <= {1, 5} else "graded"


@dataclasses.dataclass
class LabelledProbs:
    probs: np.ndarray  # (n, 5)
    labels: np.ndarray  # (n,) 1-5
    n_labelled: int  # labelled rows, with or without probabilities
    n_without_probs: int  # labelled rows without usable p(1..5), left out


def labelled_probs(rows: Sequence[dict[str, Any]], label_key: str = LABEL_COLUMN) -> LabelledProbs:
    """The p(1..5) and labels of the labelled rows that carry probabilities."""
    probs, labels, n_labelled = [], [], 0
    for r in rows:
        label = label_of(r, label_key)
        if label is None or (isinstance(label, float) and math.isnan(label)):
            continue
        n_labelled += 1
        p = row_probs(r)
        if p is None:
            continue
        probs.append(p)
        labels.append(int(label))
    return LabelledProbs(
        probs=np.asarray(probs, dtype=float).reshape(-1, 5),
        labels=np.asarray(labels, dtype=int),
        n_labelled=n_labelled,
        n_without_probs=n_labelled - len(labels),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Measuring: reliability bins, ECE with a bootstrap interval, Brier, NLL
# ---------------------------------------------------------------------------------------------------------------------


def _bin_of(conf: np.ndarray, n_bins: int) -> np.ndarray:
    return np.minimum((np.clip(conf, 0, 1) * n_bins).astype(int), n_bins - 1)


def expected_calibration_error(conf: np.ndarray, hit: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Clip-weighted mean |observed - predicted| over ``n_bins`` equal-width bins of ``conf``."""
    conf = np.asarray(conf, dtype=float)
    hit = np.asarray(hit, dtype=float)
    if not len(conf):
        return float("nan")
    b = _bin_of(conf, n_bins)
    gap = np.bincount(b, hit, n_bins) - np.bincount(b, conf, n_bins)
    return float(np.abs(gap).sum() / len(conf))


def _ece_interval(
    conf: np.ndarray, hit: np.ndarray, n_bins: int, n_boot: int, seed: int, confidence: float
) -> tuple[float, float]:
    n = len(conf)
    if n == 0 or n_boot <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    b = _bin_of(conf, n_bins)
    values = []
    block = max(1, min(n_boot, 2_000_000 // max(n, 1)))
    done = 0
    while done < n_boot:
        k = min(block, n_boot - done)
        idx = rng.integers(0, n, size=(k, n))
        codes = (b[idx] + n_bins * np.arange(k)[:, None]).ravel()
        s_hit = np.bincount(codes, hit[idx].ravel(), n_bins * k).reshape(k, n_bins)
        s_conf = np.bincount(codes, conf[idx].ravel(), n_bins * k).reshape(k, n_bins)
        values.append(np.abs(s_hit - s_conf).sum(-1) / n)
        done += k
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(np.concatenate(values), [alpha, 1 - alpha])
    return float(lo), float(hi)


@dataclasses.dataclass
class Reliability:
    """One reliability diagram and its summary numbers.

    ``kind`` is ``top-label`` (confidence = the largest of p(1..5), observed = its digit equals the label) or
    ``p_good`` (confidence = P(good), observed = the label is good)."""

    kind: str
    n: int
    n_bins: int
    ece: float
    ece_interval: tuple[float, float]
    brier: float
    nll: float
    mean_confidence: float
    observed_rate: float
    bins: list[dict[str, Any]]  # lo, hi, n, confidence (mean), observed (share), one per bin (empty bins: n=0)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["ece_interval"] = [_clean(v) for v in self.ece_interval]
        for key in ("ece", "brier", "nll", "mean_confidence", "observed_rate"):
            out[key] = _clean(out[key])
        return out


def _clean(value: Any) -> Any:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def reliability(
    kind: str,
    conf: np.ndarray,
    hit: np.ndarray,
    brier: float,
    nll: float,
    n_bins: int = ECE_BINS,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Reliability:
    conf = np.asarray(conf, dtype=float)
    hit = np.asarray(hit, dtype=float)
    b = _bin_of(conf, n_bins)
    counts = np.bincount(b, minlength=n_bins)
    s_conf = np.bincount(b, conf, n_bins)
    s_hit = np.bincount(b, hit, n_bins)
    bins = []
    for i in range(n_bins):
        c = int(counts[i])
        bins.append(
            {
                "lo": i / n_bins,
                "hi": (i + 1) / n_bins,
                "n": c,
                "confidence": float(s_conf[i] / c) if c else None,
                "observed": float(s_hit[i] / c) if c else None,
            }
        )
    return Reliability(
        kind=kind,
        n=len(conf),
        n_bins=n_bins,
        ece=expected_calibration_error(conf, hit, n_bins),
        ece_interval=_ece_interval(conf, hit, n_bins, n_boot, seed, confidence),
        brier=brier,
        nll=nll,
        mean_confidence=float(conf.mean()) if len(conf) else float("nan"),
        observed_rate=float(hit.mean()) if len(hit) else float("nan"),
        bins=bins,
    )


@dataclasses.dataclass
class CriticCalibration:
    """How well one critic's probabilities are calibrated on labelled clips (see the module docstring)."""

    label_kind: LabelKind | None  # None when no labelled clip has probabilities
    threshold: float
    n_labelled: int
    n_with_probs: int
    multiclass: Reliability | None  # top-label reliability of p(1..5) (graded labels only)
    good: Reliability | None  # reliability of P(good) against label >= threshold
    note: str = ""

    @property
    def ece(self) -> float | None:
        return self.multiclass.ece if self.multiclass else None

    @property
    def ece_good(self) -> float | None:
        return self.good.ece if self.good else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label_kind": self.label_kind,
            "threshold": self.threshold,
            "n_labelled": self.n_labelled,
            "n_with_probs": self.n_with_probs,
            "n_without_probs": self.n_labelled - self.n_with_probs,
            "multiclass": self.multiclass.to_dict() if self.multiclass else None,
            "good": self.good.to_dict() if self.good else None,
            "note": self.note,
        }

    def row(self) -> dict[str, Any]:
        """A flat record for tables."""

        def num(r: Reliability | None, key: str) -> float:
            return float(getattr(r, key)) if r is not None else float("nan")

        return {
            "labels": self.label_kind or "–",
            "n_with_probs": self.n_with_probs,
            "ece_p1_5": num(self.multiclass, "ece"),
            "ece_p1_5_lo": self.multiclass.ece_interval[0] if self.multiclass else float("nan"),
            "ece_p1_5_hi": self.multiclass.ece_interval[1] if self.multiclass else float("nan"),
            "nll_p1_5": num(self.multiclass, "nll"),
            "ece_p_good": num(self.good, "ece"),
            "ece_p_good_lo": self.good.ece_interval[0] if self.good else float("nan"),
            "ece_p_good_hi": self.good.ece_interval[1] if self.good else float("nan"),
            "brier_p_good": num(self.good, "brier"),
            "mean_p_good": num(self.good, "mean_confidence"),
            "share_good": num(self.good, "observed_rate"),
            "note": self.note,
        }


BINARY_NOTE = (
    "labels are binary (1 or 5 only): p(1..5) is not measured as a five-way forecast (an answer 2-4 can never be "
    "right); P(good) is measured against label >= {t:g}"
)


def measure_probs(
    probs: np.ndarray,
    labels: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    n_bins: int = ECE_BINS,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    kind: LabelKind | None = None,
    n_labelled: int | None = None,
) -> CriticCalibration:
    """:class:`CriticCalibration` of probabilities (n, 5) against labels 1-5."""
    probs = np.asarray(probs, dtype=float).reshape(-1, 5)
    labels = np.asarray(labels, dtype=int)
    n = len(labels)
    n_labelled = n if n_labelled is None else n_labelled
    if n == 0:
        return CriticCalibration(
            None, threshold, n_labelled, 0, None, None, "no labelled clip has p(1..5) (expected mode gives them)"
        )
    kind = kind or label_kind(labels)
    boot = {"n_bins": n_bins, "n_boot": n_boot, "seed": seed, "confidence": confidence}
    multiclass = None
    note = ""
    if kind == "graded":
        onehot = (labels[:, None] == _V[None, :].astype(int)).astype(float)
        top = probs.max(1)
        hit = (probs.argmax(1) + 1 == labels).astype(float)
        brier = float(((probs - onehot) ** 2).sum(1).mean())
        nll = float(-np.log(np.clip(probs[np.arange(n), labels - 1], _EPS, 1)).mean())
        multiclass = reliability("top-label", top, hit, brier, nll, **boot)
    else:
        note = BINARY_NOTE.format(t=threshold)
    g = np.clip(p_good(probs, threshold), 0, 1)
    y = (labels >= threshold).astype(float)
    brier_g = float(((g - y) ** 2).mean())
    nll_g = float(-(y * np.log(np.clip(g, _EPS, 1)) + (1 - y) * np.log(np.clip(1 - g, _EPS, 1))).mean())
    good = reliability("p_good", g, y, brier_g, nll_g, **boot)
    return CriticCalibration(kind, threshold, n_labelled, n, multiclass, good, note)


def measure_calibration(
    rows: Sequence[dict[str, Any]],
    label_key: str = LABEL_COLUMN,
    threshold: float = DEFAULT_THRESHOLD,
    n_bins: int = ECE_BINS,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> CriticCalibration:
    """:class:`CriticCalibration` of scored rows (labels in ``row['item'][label_key]``)."""
    data = labelled_probs(rows, label_key)
    result = measure_probs(
        data.probs,
        data.labels,
        threshold,
        n_bins=n_bins,
        n_boot=n_boot,
        seed=seed,
        confidence=confidence,
        n_labelled=data.n_labelled,
    )
    if data.n_without_probs:
        extra = f"{data.n_without_probs} labelled clip(s) without p(1..5) (unparsed or generate mode) left out"
        result.note = f"{result.note}; {extra}" if result.note else extra
    return result


def reliability_figure(calibrations: dict[str, CriticCalibration], title: str | None = None):  # noqa: ANN201
    """Reliability diagrams: p(1..5) top-label (when any critic was measured on graded labels) and P(good), one line
    per critic, the diagonal for a perfectly calibrated critic, marker size by clips per bin."""
    from matplotlib.figure import Figure

    kinds = [k for k in ("multiclass", "good") if any(getattr(c, k) is not None for c in calibrations.values())]
    fig = Figure(figsize=(4.4 * max(1, len(kinds)), 4.0), layout="constrained")
    axes = fig.subplots(1, max(1, len(kinds)), squeeze=False)[0]
    if not kinds:
        axes[0].text(0.5, 0.5, "no labelled clip has p(1..5)", ha="center", va="center")
        axes[0].axis("off")
        return fig
    labels = {"multiclass": ("largest of p(1..5)", "its digit = label"), "good": ("P(good)", "share labelled good")}
    for ax, kind in zip(axes, kinds):
        ax.plot([0, 1], [0, 1], color="#999", lw=1, ls="--", label="calibrated")
        for name, cal in calibrations.items():
            rel: Reliability | None = getattr(cal, kind)
            if rel is None:
                continue
            pts = [b for b in rel.bins if b["n"]]
            x = [b["confidence"] for b in pts]
            y = [b["observed"] for b in pts]
            sizes = [20 + 200 * b["n"] / max(1, rel.n) for b in pts]
            (line,) = ax.plot(x, y, marker="", lw=1.2, label=f"{name} (ECE {rel.ece:.3f})")
            ax.scatter(x, y, s=sizes, color=line.get_color(), zorder=3)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(f"predicted: {labels[kind][0]}")
        ax.set_ylabel(f"observed: {labels[kind][1]}")
        ax.set_title("p(1..5), top label" if kind == "multiclass" else "P(good) vs label good", fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# ---------------------------------------------------------------------------------------------------------------------
# Correcting: temperature scaling and isotonic regression, saved as JSON
# ---------------------------------------------------------------------------------------------------------------------


def temperature_scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """p(s)^(1/T), renormalised: softmax of the digit logits divided by T (zero stays zero)."""
    p = np.asarray(probs, dtype=float)
    with np.errstate(divide="ignore"):
        logp = np.log(p) / temperature
    logp = logp - np.max(logp, axis=-1, keepdims=True)
    q = np.exp(logp)
    return q / q.sum(-1, keepdims=True)


def rescale_to_good(probs: np.ndarray, target: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """p(1..5) rescaled within the good and the bad digits so that P(good) becomes ``target`` (shape kept within each
    group; a group with no mass gets the target spread evenly)."""
    p = np.asarray(probs, dtype=float).reshape(-1, 5)
    target = np.clip(np.asarray(target, dtype=float).reshape(-1), 0, 1)
    good = good_mask(threshold)
    out = np.empty_like(p)
    for mask, mass in ((good, target), (~good, 1 - target)):
        part = p[:, mask]
        total = part.sum(1, keepdims=True)
        even = np.full_like(part, 1.0 / max(1, mask.sum()))
        shape = np.where(total > 0, part / np.where(total > 0, total, 1), even)
        out[:, mask] = shape * mass[:, None]
    return out


@dataclasses.dataclass
class Calibration:
    """A fitted calibration map, saved as JSON (:meth:`save`) and applied to scored rows (:meth:`apply_rows`)."""

    method: Literal["temperature", "isotonic"]
    threshold: float = DEFAULT_THRESHOLD  # good = digit at least this (the P(good) the isotonic map reads)
    temperature: float | None = None
    isotonic_x: list[float] | None = None  # P(good) knots (increasing) ...
    isotonic_y: list[float] | None = None  # ... and the calibrated P(good) at each (non-decreasing), linear between
    label_kind: LabelKind = "graded"
    fitted_on: dict[str, Any] = dataclasses.field(default_factory=dict)  # model, prompt, mode, data, n, label column
    in_sample: dict[str, Any] = dataclasses.field(default_factory=dict)  # ECE before/after on the calibration split
    path: str | None = None  # where it was loaded from
    note: str = ""  # what the fit found worth saying (a temperature at its bound)

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """Calibrated p(1..5) for probabilities of shape (n, 5)."""
        p = np.asarray(probs, dtype=float).reshape(-1, 5)
        if self.method == "temperature":
            return temperature_scale(p, float(self.temperature))
        g = p_good(p, self.threshold)
        target = np.interp(g, self.isotonic_x, self.isotonic_y)  # clamps outside the knots, as fit's "clip"
        return rescale_to_good(p, target, self.threshold)

    def describe(self) -> str:
        if self.method == "temperature":
            return f"temperature scaling, T = {self.temperature:.3f}"
        return f"isotonic regression of P(good), {len(self.isotonic_x or [])} knots"

    def apply_rows(self, rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        """Rows with calibrated ``probs``, ``expected_score`` and ``score`` (the most likely calibrated digit); the
        uncalibrated values are kept under ``uncalibrated``. Returns the rows and how many had no p(1..5) (left as
        they are: unparsed, or generate mode)."""
        out = []
        n_without = 0
        for r in rows:
            p = row_probs(r)
            if p is None:
                n_without += 1
                out.append(dict(r))
                continue
            q = self.apply(p[None, :])[0]
            out.append(
                {
                    **r,
                    "probs": [float(x) for x in q],
                    "expected_score": float((q * _V).sum()),
                    "score": int(q.argmax() + 1),
                    "uncalibrated": {
                        "probs": r.get("probs"),
                        "expected_score": r.get("expected_score"),
                        "score": r.get("score"),
                    },
                }
            )
        return out, n_without

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": CALIBRATION_KIND,
            "version": CALIBRATION_VERSION,
            "method": self.method,
            "threshold": self.threshold,
            "label_kind": self.label_kind,
        }
        if self.method == "temperature":
            data["temperature"] = self.temperature
        else:
            data["isotonic"] = {"x": self.isotonic_x, "y": self.isotonic_y}
        data["fitted_on"] = self.fitted_on
        data["in_sample"] = self.in_sample
        data["note"] = self.note
        return data

    def save(self, path: str | Path) -> Path:
        from recipe_lib.io import atomic_write_json

        return atomic_write_json(Path(path), self.to_dict())

    def summary(self) -> dict[str, Any]:
        """What a run records about the calibration it applied."""
        return {"file": self.path, "method": self.method, "description": self.describe(), **self.to_dict()}


def _nll_temperature(log_t: float, probs: np.ndarray, labels: np.ndarray, kind: LabelKind, threshold: float) -> float:
    q = temperature_scale(probs, math.exp(log_t))
    if kind == "graded":
        return float(-np.log(np.clip(q[np.arange(len(labels)), labels - 1], _EPS, 1)).mean())
    g = np.clip(p_good(q, threshold), _EPS, 1 - _EPS)
    y = labels >= threshold
    return float(-np.where(y, np.log(g), np.log(1 - g)).mean())


def fit_probs(
    probs: np.ndarray,
    labels: np.ndarray,
    method: str = "temperature",
    threshold: float = DEFAULT_THRESHOLD,
    min_clips: int = MIN_CALIBRATION_CLIPS,
) -> Calibration:
    """Fit a calibration on probabilities (n, 5) and labels 1-5 (see the module docstring)."""
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"unknown calibration method {method!r}", hint=f"use one of {', '.join(CALIBRATION_METHODS)}")
    probs = np.asarray(probs, dtype=float).reshape(-1, 5)
    labels = np.asarray(labels, dtype=int)
    n = len(labels)
    if n < min_clips:
        raise DataError(
            f"{n} labelled clip(s) with p(1..5) are too few to fit a calibration (at least {min_clips})",
            hint="use a larger labelled calibration split, scored in expected mode",
        )
    y = labels >= threshold
    if y.all() or not y.any():
        which = "good" if y.all() else "bad"
        raise DataError(
            f"every calibration clip is labelled {which} (label {'>=' if y.all() else '<'} {threshold:g})",
            hint="the calibration split needs both good and bad clips",
        )
    kind = label_kind(labels)
    if method == "temperature":
        from scipy.optimize import minimize_scalar

        low, high = math.log(TEMPERATURE_BOUNDS[0]), math.log(TEMPERATURE_BOUNDS[1])
        res = minimize_scalar(
            _nll_temperature, bounds=(low, high), method="bounded", args=(probs, labels, kind, threshold)
        )
        t = float(math.exp(res.x))
        note = ""
        if res.x > high - 0.01:
            note = (
                f"T reached its upper bound {TEMPERATURE_BOUNDS[1]:g}: the critic's probabilities say almost nothing "
                "about these labels, so calibration flattens them toward uniform (a collapsed or untrained critic)"
            )
        elif res.x < low + 0.01:
            note = f"T reached its lower bound {TEMPERATURE_BOUNDS[0]:g}: the critic is far too unsure"
        return Calibration("temperature", threshold, temperature=t, label_kind=kind, note=note)
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(p_good(probs, threshold), y.astype(float))
    return Calibration(
        "isotonic",
        threshold,
        isotonic_x=[float(v) for v in iso.X_thresholds_],
        isotonic_y=[float(v) for v in iso.y_thresholds_],
        label_kind=kind,
    )


def fit_calibration(
    rows: Sequence[dict[str, Any]],
    method: str = "temperature",
    label_key: str = LABEL_COLUMN,
    threshold: float = DEFAULT_THRESHOLD,
    min_clips: int = MIN_CALIBRATION_CLIPS,
    n_bins: int = ECE_BINS,
) -> Calibration:
    """Fit a calibration on scored, labelled rows; ``in_sample`` records the ECE before and after on those rows."""
    data = labelled_probs(rows, label_key)
    if data.n_labelled and not len(data.labels):
        raise DataError(
            f"none of the {data.n_labelled} labelled clips has p(1..5)",
            hint="score the calibration split in expected mode (--mode expected, the default)",
        )
    cal = fit_probs(data.probs, data.labels, method, threshold, min_clips)
    before = measure_probs(data.probs, data.labels, threshold, n_bins=n_bins, n_boot=0)
    after = measure_probs(cal.apply(data.probs), data.labels, threshold, n_bins=n_bins, n_boot=0, kind=cal.label_kind)
    models = sorted({str(r.get("model")) for r in rows if r.get("model")})
    prompts = sorted({str(r.get("prompt")) for r in rows if r.get("prompt")})
    modes = sorted({str(r.get("mode")) for r in rows if r.get("mode")})
    cal.fitted_on = {
        "model": models[0] if len(models) == 1 else models,
        "prompt": prompts[0] if len(prompts) == 1 else prompts,
        "mode": modes[0] if len(modes) == 1 else modes,
        "label_column": label_key,
        "n": len(data.labels),
        "n_without_probs": data.n_without_probs,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    cal.in_sample = {
        "note": "measured on the calibration split itself (optimistic); measure on a test split with "
        "`plausibility evaluate --calibration NAME=FILE`",
        "ece_p1_5": {"before": before.ece, "after": after.ece},
        "ece_p_good": {"before": before.ece_good, "after": after.ece_good},
        # what temperature scaling minimises: of the label (graded) or of good-vs-bad (binary)
        "nll": {
            "before": _nll_of(before, cal.label_kind),
            "after": _nll_of(after, cal.label_kind),
        },
    }
    return cal


def _nll_of(measured: CriticCalibration, kind: LabelKind) -> float | None:
    rel = measured.multiclass if kind == "graded" else measured.good
    return _clean(rel.nll) if rel is not None else None


def _bad_file(path: Path, why: str) -> DataError:
    return DataError(
        f"{path} is not a calibration file: {why}",
        hint="write one with `plausibility calibrate DATA --out FILE.json` (or Calibration.save in Python)",
    )


def load_calibration(path: str | Path) -> Calibration:
    """Read and check a calibration JSON file (every problem is one clear error)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"calibration file not found: {path}", hint="write one with `plausibility calibrate`")
    size = path.stat().st_size
    if size > MAX_CALIBRATION_BYTES:
        raise _bad_file(path, f"it is {size} bytes, more than a calibration file ever holds ({MAX_CALIBRATION_BYTES})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _bad_file(path, f"not valid JSON ({str(exc).splitlines()[0] if str(exc) else exc})") from None
    if not isinstance(data, dict) or data.get("kind") != CALIBRATION_KIND:
        raise _bad_file(path, f'it has no "kind": "{CALIBRATION_KIND}"')
    if data.get("version") != CALIBRATION_VERSION:
        raise _bad_file(path, f"version {data.get('version')!r}, this release reads version {CALIBRATION_VERSION}")
    method = data.get("method")
    if method not in CALIBRATION_METHODS:
        raise _bad_file(path, f"unknown method {method!r} (known: {', '.join(CALIBRATION_METHODS)})")
    threshold = data.get("threshold", DEFAULT_THRESHOLD)
    if not isinstance(threshold, int | float) or not 1 < float(threshold) <= 5:
        raise _bad_file(path, f"threshold {threshold!r} is not a number above 1 and at most 5")
    kind = data.get("label_kind", "graded")
    if kind not in ("graded", "binary"):
        raise _bad_file(path, f"label_kind {kind!r} is neither 'graded' nor 'binary'")
    for key in ("fitted_on", "in_sample"):
        if not isinstance(data.get(key) or {}, dict):
            raise _bad_file(path, f"{key} is a {type(data[key]).__name__}, not an object of named values")
    note = data.get("note") or ""
    if not isinstance(note, str):
        raise _bad_file(path, f"note is a {type(note).__name__}, not a text")
    common = {
        "threshold": float(threshold),
        "label_kind": kind,
        "fitted_on": data.get("fitted_on") or {},
        "in_sample": data.get("in_sample") or {},
        "path": str(path),
        "note": note,
    }
    if method == "temperature":
        t = data.get("temperature")
        low, high = TEMPERATURE_BOUNDS
        if isinstance(t, bool) or not isinstance(t, int | float) or not low <= t <= high:
            # A temperature of 5e-324 passes "positive and finite" yet turns every p(1..5) into NaN; a fit only
            # ever returns a value within its search range.
            raise _bad_file(path, f"temperature {t!r} is not a number from {low:g} to {high:g} (the range a fit uses)")
        return Calibration("temperature", temperature=float(t), **common)
    iso = data.get("isotonic")
    x = iso.get("x") if isinstance(iso, dict) else None
    y = iso.get("y") if isinstance(iso, dict) else None
    try:
        xa = np.asarray(x, dtype=float)
        ya = np.asarray(y, dtype=float)
    except (TypeError, ValueError):
        raise _bad_file(path, "isotonic.x and isotonic.y must be lists of numbers") from None
    if xa.ndim != 1 or ya.shape != xa.shape or len(xa) < 1:
        raise _bad_file(path, "isotonic.x and isotonic.y must be lists of numbers of the same length")
    if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(ya))) or ya.min() < 0 or ya.max() > 1:
        raise _bad_file(path, "isotonic values must be finite and within 0-1")
    if np.any(np.diff(xa) < 0) or np.any(np.diff(ya) < 0):
        raise _bad_file(path, "isotonic.x and isotonic.y must be non-decreasing")
    return Calibration("isotonic", isotonic_x=xa.tolist(), isotonic_y=ya.tolist(), **common)
