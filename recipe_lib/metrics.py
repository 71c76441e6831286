"""Agreement between a critic's scores and human labels.

Unparsed outputs are never dropped silently: ``n`` counts every labelled clip, ``n_parsed`` those with a score, and
``coverage`` = n_parsed / n. Rank and correlation metrics are computed on the parsed clips; ``accuracy`` counts an
unparsed clip as wrong (so a critic cannot look better by failing to answer), while ``accuracy_parsed`` is over parsed
clips only. Correlations are NaN (not an error) when either side is constant.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from recipe_lib.inference.record import item_of, label_of


@dataclasses.dataclass
class CoreMetrics:
    n: int
    n_parsed: int
    coverage: float
    accuracy: float
    accuracy_parsed: float
    pearson: float
    spearman: float
    majority_accuracy: float
    majority_label: int | None

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in dataclasses.asdict(self).items()}


def _corr(kind: str, x: np.ndarray, y: np.ndarray) -> float:
    from scipy import stats

    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    if kind == "pearson":
        return float(stats.pearsonr(x, y).statistic)
    if kind == "spearman":
        return float(stats.spearmanr(x, y).statistic)
    if kind == "kendall":
        return float(stats.kendalltau(x, y).statistic)
    raise ValueError(kind)


def majority_baseline(labels: Sequence[int]) -> tuple[int | None, float]:
    """The most common label and the accuracy of always predicting it."""
    if not len(labels):
        return None, float("nan")
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    i = int(np.argmax(counts))
    return int(values[i]), float(counts[i] / len(labels))


def core_metrics(labels: Sequence[int], predictions: Sequence[float | int | None]) -> CoreMetrics:
    """Exact accuracy, Pearson, Spearman, n, coverage and the majority-class baseline."""
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    y = np.asarray(labels, dtype=float)
    mask = np.array([p is not None and not (isinstance(p, float) and math.isnan(p)) for p in predictions], dtype=bool)
    p = np.array([float(v) if m else np.nan for v, m in zip(predictions, mask)], dtype=float)
    n, n_parsed = len(y), int(mask.sum())
    correct = (p[mask] == y[mask]).sum() if n_parsed else 0
    label, majority = majority_baseline([int(v) for v in y])
    return CoreMetrics(
        n=n,
        n_parsed=n_parsed,
        coverage=n_parsed / n if n else float("nan"),
        accuracy=float(correct / n) if n else float("nan"),
        accuracy_parsed=float(correct / n_parsed) if n_parsed else float("nan"),
        pearson=_corr("pearson", y[mask], p[mask]),
        spearman=_corr("spearman", y[mask], p[mask]),
        majority_accuracy=majority,
        majority_label=label,
    )


def metrics_from_rows(rows: Sequence[dict[str, Any]], label_key: str = "pc") -> CoreMetrics:
    """Core metrics over scored result rows that carry a label in ``row['item'][label_key]``."""
    labelled = [r for r in rows if label_of(r, label_key) is not None]
    labels = [int(label_of(r, label_key)) for r in labelled]
    return core_metrics(labels, [r.get("score") for r in labelled])


# ---------------------------------------------------------------------------------------------------------------------
# The full metric suite: every number comes with n, parse coverage and a seeded bootstrap interval.
#
# All discrete metrics are functions of one table: rows are the labels 1-5, columns the predicted scores 1-5 plus an
# "unparsed" column. Computing them from the table (batched over a leading axis) makes the bootstrap cheap: each
# resample is a table built with one ``bincount``, so 1000 resamples of thousands of clips take milliseconds. ROC-AUC
# needs the continuous value of each clip and is computed from ranks, also batched.
# ---------------------------------------------------------------------------------------------------------------------

SCORE_VALUES = (1, 2, 3, 4, 5)
CONFUSION_COLUMNS = ("1", "2", "3", "4", "5", "unparsed")
GROUP_COLUMNS = ("model_name", "category", "is_hard", "violation", "violation_category")
DEFAULT_THRESHOLD = 4.0

# name -> one-line meaning (also the order of tables and reports)
METRICS: dict[str, str] = {
    "accuracy": "exact match; an unparsed answer counts as wrong",
    "accuracy_parsed": "exact match over parsed answers only",
    "within1": "prediction within ±1 of the label; unparsed counts as wrong",
    "mae": "mean absolute error over parsed answers",
    "pearson": "Pearson correlation of score and label (parsed)",
    "spearman": "Spearman rank correlation (parsed)",
    "kendall": "Kendall tau-b (parsed)",
    "qwk": "quadratic-weighted Cohen's kappa on the 1-5 scale (parsed)",
    "precision": "good-vs-bad precision: of clips predicted good, share labelled good (parsed)",
    "recall": "good-vs-bad recall: of clips labelled good, share predicted good (parsed)",
    "f1": "good-vs-bad F1 (parsed)",
    "binary_accuracy": "good-vs-bad accuracy; unparsed counts as wrong",
    "roc_auc": "ROC-AUC of the expected score against the good-vs-bad label (parsed)",
}


def _nan_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _weighted_pearson(table: np.ndarray, xv: np.ndarray, yv: np.ndarray) -> np.ndarray:
    """Pearson correlation of a joint count table (..., 5, 5) with row values ``xv`` (..., 5) and column values
    ``yv`` (..., 5); NaN where either side is constant or fewer than two clips."""
    n = table.sum((-2, -1))
    rows, cols = table.sum(-1), table.sum(-2)
    mx = _nan_div((rows * xv).sum(-1), n)
    my = _nan_div((cols * yv).sum(-1), n)
    dx = xv - mx[..., None]
    dy = yv - my[..., None]
    cov = (table * dx[..., :, None] * dy[..., None, :]).sum((-2, -1))
    vx = (rows * dx**2).sum(-1)
    vy = (cols * dy**2).sum(-1)
    # Relative tolerance: a constant side gives a variance of exactly 0 up to rounding.
    scale_x = (rows * xv**2).sum(-1)
    scale_y = (cols * yv**2).sum(-1)
    ok = (n >= 2) & (vx > 1e-12 * np.maximum(scale_x, 1)) & (vy > 1e-12 * np.maximum(scale_y, 1))
    out = np.full(n.shape, np.nan)
    np.divide(cov, np.sqrt(vx * vy), out=out, where=ok)
    return np.clip(out, -1.0, 1.0)


def _midranks(counts: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) of the values 1..5 given their counts (..., 5)."""
    before = np.cumsum(counts, -1) - counts
    return before + (counts + 1) / 2.0


def table_metrics(table: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> dict[str, np.ndarray]:
    """All discrete metrics from confusion tables of shape (..., 5, 6) (labels x predicted 1-5 + unparsed)."""
    t = np.asarray(table, dtype=float)
    if t.shape[-2:] != (5, 6):
        raise ValueError(f"expected tables of shape (..., 5, 6), got {t.shape}")
    v = np.asarray(SCORE_VALUES, dtype=float)
    parsed = t[..., :5]
    n = t.sum((-2, -1))
    n_parsed = parsed.sum((-2, -1))
    diff = np.abs(v[:, None] - v[None, :])
    correct = np.trace(parsed, axis1=-2, axis2=-1)
    out: dict[str, np.ndarray] = {
        "n": n,
        "n_parsed": n_parsed,
        "coverage": _nan_div(n_parsed, n),
        "accuracy": _nan_div(correct, n),
        "accuracy_parsed": _nan_div(correct, n_parsed),
        "within1": _nan_div((parsed * (diff <= 1)).sum((-2, -1)), n),
        "mae": _nan_div((parsed * diff).sum((-2, -1)), n_parsed),
    }
    rows, cols = parsed.sum(-1), parsed.sum(-2)
    vb = np.broadcast_to(v, rows.shape)
    out["pearson"] = _weighted_pearson(parsed, vb, vb)
    out["spearman"] = _weighted_pearson(parsed, _midranks(rows), _midranks(cols))

    # Kendall tau-b: concordant pairs sit below-right of a cell, discordant pairs below-left.
    pad = np.zeros(parsed.shape[:-2] + (6, 7))
    pad[..., :5, 1:6] = parsed
    below_right = np.flip(np.cumsum(np.cumsum(np.flip(pad, (-2, -1)), -2), -1), (-2, -1))  # sum k>=i, l>=j
    below_left = np.flip(np.cumsum(np.flip(pad, -2), -2), -2).cumsum(-1)  # sum k>=i, l<=j
    concordant = (parsed * below_right[..., 1:6, 2:7]).sum((-2, -1))
    discordant = (parsed * below_left[..., 1:6, 0:5]).sum((-2, -1))
    pairs = n_parsed * (n_parsed - 1) / 2
    x_ties = (rows * (rows - 1) / 2).sum(-1)
    y_ties = (cols * (cols - 1) / 2).sum(-1)
    denom = (pairs - x_ties) * (pairs - y_ties)
    tau = np.full(n.shape, np.nan)
    np.divide(concordant - discordant, np.sqrt(np.maximum(denom, 0)), out=tau, where=denom > 0)
    out["kendall"] = np.clip(tau, -1.0, 1.0)

    # Quadratic-weighted kappa on the fixed 1-5 scale.
    weights = diff**2
    expected = _nan_div(rows[..., :, None] * cols[..., None, :], n_parsed[..., None, None])
    observed_w = (parsed * weights).sum((-2, -1))
    expected_w = (expected * weights).sum((-2, -1))
    out["qwk"] = 1.0 - _nan_div(observed_w, expected_w)

    good_label = v >= threshold
    good_pred = v >= threshold
    tp = parsed[..., good_label, :][..., :, good_pred].sum((-2, -1))
    fp = parsed[..., ~good_label, :][..., :, good_pred].sum((-2, -1))
    fn = parsed[..., good_label, :][..., :, ~good_pred].sum((-2, -1))
    tn = parsed[..., ~good_label, :][..., :, ~good_pred].sum((-2, -1))
    out["precision"] = _nan_div(tp, tp + fp)
    out["recall"] = _nan_div(tp, tp + fn)
    out["f1"] = _nan_div(2 * tp, 2 * tp + fp + fn)
    out["binary_accuracy"] = _nan_div(tp + tn, n)
    return out


def _auc_batch(values: np.ndarray, positive: np.ndarray, parsed: np.ndarray) -> np.ndarray:
    """ROC-AUC per row of (B, n) arrays (Mann-Whitney with mid-ranks); unparsed entries are ignored."""
    from scipy.stats import rankdata

    vals = np.where(parsed, values, np.inf)  # unparsed rank above every parsed clip, leaving parsed ranks intact
    ranks = rankdata(vals, axis=-1)
    pos = positive & parsed
    neg = ~positive & parsed
    n_pos = pos.sum(-1).astype(float)
    n_neg = neg.sum(-1).astype(float)
    u = (ranks * pos).sum(-1) - n_pos * (n_pos + 1) / 2
    return _nan_div(u, n_pos * n_neg)


def confusion_matrix(labels: Sequence[int], scores: Sequence[int | None]) -> np.ndarray:
    """5x6 counts: rows are labels 1-5, columns predicted 1-5 and "unparsed"."""
    codes = _cell_codes(*_check_inputs(labels, scores))
    return np.bincount(codes, minlength=30).reshape(5, 6)


def _check_inputs(labels: Sequence[Any], scores: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    from recipe_lib.errors import DataError

    if len(labels) != len(scores):
        raise DataError(f"{len(labels)} labels but {len(scores)} predictions")
    y = np.empty(len(labels), dtype=int)
    for i, lab in enumerate(labels):
        try:
            value = float(lab)
        except (TypeError, ValueError):
            raise DataError(f"label #{i} is {lab!r}, not a number 1-5") from None
        if value not in SCORE_VALUES:
            raise DataError(
                f"label #{i} is {lab!r}; labels must be whole numbers 1-5",
                hint="map binary labels to 1/5 first (scale_labels) or drop unlabelled rows",
            )
        y[i] = int(value)
    s = np.zeros(len(scores), dtype=int)  # 0 = unparsed
    for i, sc in enumerate(scores):
        if sc is None or (isinstance(sc, float) and math.isnan(sc)):
            continue
        if float(sc) not in SCORE_VALUES:
            raise DataError(f"prediction #{i} is {sc!r}; scores must be whole numbers 1-5 or missing (unparsed)")
        s[i] = int(sc)
    return y, s


def _cell_codes(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    column = np.where(s == 0, 5, s - 1)
    return (y - 1) * 6 + column


@dataclasses.dataclass
class MetricSuite:
    """Agreement of one critic with the labels: values, bootstrap intervals, the confusion table and counts."""

    n: int
    n_parsed: int
    coverage: float
    threshold: float
    values: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    confusion: np.ndarray
    n_good: int
    majority_label: int | None
    majority_accuracy: float
    n_boot: int
    seed: int
    confidence: float
    unparsed_reasons: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def n_unparsed(self) -> int:
        return self.n - self.n_parsed

    def __getitem__(self, name: str) -> float:
        return self.values[name]

    def confusion_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame(
            self.confusion,
            index=pd.Index([str(v) for v in SCORE_VALUES], name="label"),
            columns=pd.Index(list(CONFUSION_COLUMNS), name="predicted"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "n_parsed": self.n_parsed,
            "n_unparsed": self.n_unparsed,
            "coverage": _clean(self.coverage),
            "threshold": self.threshold,
            "n_good": self.n_good,
            "majority_label": self.majority_label,
            "majority_accuracy": _clean(self.majority_accuracy),
            "metrics": {k: _clean(v) for k, v in self.values.items()},
            "intervals": {k: [_clean(lo), _clean(hi)] for k, (lo, hi) in self.intervals.items()},
            "confusion": {
                "rows": [str(v) for v in SCORE_VALUES],
                "columns": list(CONFUSION_COLUMNS),
                "counts": self.confusion.astype(int).tolist(),
            },
            "unparsed_reasons": dict(self.unparsed_reasons),
            "bootstrap": {"resamples": self.n_boot, "seed": self.seed, "confidence": self.confidence},
        }

    def row(self) -> dict[str, Any]:
        """A flat record (value, low, high per metric) for comparison tables."""
        rec: dict[str, Any] = {"n": self.n, "n_parsed": self.n_parsed, "coverage": self.coverage}
        for name in METRICS:
            lo, hi = self.intervals.get(name, (float("nan"), float("nan")))
            rec[name] = self.values[name]
            rec[f"{name}_lo"] = lo
            rec[f"{name}_hi"] = hi
        return rec


def _clean(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    return value


def bootstrap_metrics(
    y: np.ndarray,
    s: np.ndarray,
    values: np.ndarray,
    threshold: float,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of every metric over ``n_boot`` resamples of the clips (with replacement).

    ``y`` labels 1-5, ``s`` scores 1-5 or 0 for unparsed, ``values`` the continuous score used for ROC-AUC (NaN for
    unparsed). The resamples are drawn in blocks so memory stays bounded for large splits.
    """
    n = len(y)
    names = list(METRICS)
    if n == 0 or n_boot <= 0:
        return {k: (float("nan"), float("nan")) for k in names}
    rng = np.random.default_rng(seed)
    codes = _cell_codes(y, s)
    positive = y >= threshold
    parsed = s > 0
    collected: dict[str, list[np.ndarray]] = {k: [] for k in names}
    block = max(1, min(n_boot, 2_000_000 // max(n, 1)))
    done = 0
    while done < n_boot:
        b = min(block, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))
        flat = (codes[idx] + 30 * np.arange(b)[:, None]).ravel()
        tables = np.bincount(flat, minlength=30 * b).reshape(b, 5, 6)
        res = table_metrics(tables, threshold)
        res["roc_auc"] = _auc_batch(values[idx], positive[idx], parsed[idx])
        for k in names:
            collected[k].append(res[k])
        done += b
    alpha = (1.0 - confidence) / 2.0
    intervals = {}
    for k in names:
        arr = np.concatenate(collected[k])
        arr = arr[~np.isnan(arr)]
        if len(arr) == 0:
            intervals[k] = (float("nan"), float("nan"))
        else:
            lo, hi = np.quantile(arr, [alpha, 1.0 - alpha])
            intervals[k] = (float(lo), float(hi))
    return intervals


def evaluate_predictions(
    labels: Sequence[int],
    scores: Sequence[int | None],
    expected: Sequence[float | None] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    unparsed_reasons: dict[str, int] | None = None,
) -> MetricSuite:
    """The full metric suite for labels 1-5 and predicted scores (1-5, or None when the answer was unparsed).

    ``expected`` is the continuous score (p-weighted mean or mean over trials) used for ROC-AUC; where it is missing
    the integer score stands in. ``threshold`` splits good (>= threshold) from bad, for labels and predictions alike.
    """
    y, s = _check_inputs(labels, scores)
    if expected is not None and len(expected) != len(scores):
        raise ValueError(f"{len(expected)} expected scores but {len(scores)} predictions")
    cont = np.full(len(s), np.nan)
    for i in range(len(s)):
        e = expected[i] if expected is not None else None
        if s[i] > 0:
            cont[i] = float(e) if e is not None and not (isinstance(e, float) and math.isnan(e)) else float(s[i])
    table = np.bincount(_cell_codes(y, s), minlength=30).reshape(5, 6)
    point = table_metrics(table, threshold)
    values = {k: float(point[k]) for k in METRICS if k in point}
    parsed = s > 0
    values["roc_auc"] = float(_auc_batch(cont[None, :], (y >= threshold)[None, :], parsed[None, :])[0])
    values = {k: values[k] for k in METRICS}
    label, majority = majority_baseline(y.tolist())
    return MetricSuite(
        n=len(y),
        n_parsed=int(parsed.sum()),
        coverage=float(point["coverage"]),
        threshold=float(threshold),
        values=values,
        intervals=bootstrap_metrics(y, s, cont, threshold, n_boot=n_boot, seed=seed, confidence=confidence),
        confusion=table,
        n_good=int((y >= threshold).sum()),
        majority_label=label,
        majority_accuracy=majority,
        n_boot=n_boot,
        seed=seed,
        confidence=confidence,
        unparsed_reasons=dict(unparsed_reasons or {}),
    )


def labelled_rows(rows: Sequence[dict[str, Any]], label_key: str = "pc") -> list[dict[str, Any]]:
    """Rows whose item carries a label."""
    out = []
    for r in rows:
        value = label_of(r, label_key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        out.append(r)
    return out


def unparsed_reason(row: dict[str, Any]) -> str:
    return str(row.get("parse_error") or "no score")


def suite_from_rows(
    rows: Sequence[dict[str, Any]],
    label_key: str = "pc",
    threshold: float = DEFAULT_THRESHOLD,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> MetricSuite:
    """The metric suite over scored result rows (``row['item'][label_key]`` is the label); unlabelled rows are left
    out (count them with :func:`labelled_rows`), unparsed rows stay in and count as wrong where stated."""
    from collections import Counter

    rows = labelled_rows(rows, label_key)
    reasons = Counter(unparsed_reason(r) for r in rows if r.get("score") is None)
    return evaluate_predictions(
        [label_of(r, label_key) for r in rows],
        [r.get("score") for r in rows],
        [r.get("expected_score") for r in rows],
        threshold=threshold,
        n_boot=n_boot,
        seed=seed,
        confidence=confidence,
        unparsed_reasons=dict(reasons),
    )


def _group_value(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "(missing)"
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    return str(value)


def group_breakdown(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str] | None = None,
    label_key: str = "pc",
    threshold: float = DEFAULT_THRESHOLD,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Any:
    """Per-group metrics (one row per column and value) as a DataFrame.

    ``columns`` defaults to those of :data:`GROUP_COLUMNS` that the rows' items carry. Each row has ``column``,
    ``group``, n, n_parsed, coverage, and every metric with its ``_lo``/``_hi`` bootstrap bounds.
    """
    import pandas as pd

    rows = labelled_rows(rows, label_key)
    if columns is None:
        present = set().union(*(item_of(r).keys() for r in rows)) if rows else set()
        columns = [c for c in GROUP_COLUMNS if c in present]
    records = []
    for col in columns:
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            groups.setdefault(_group_value(item_of(r).get(col)), []).append(r)
        for value in sorted(groups):
            suite = suite_from_rows(
                groups[value], label_key, threshold=threshold, n_boot=n_boot, seed=seed, confidence=confidence
            )
            records.append({"column": col, "group": value, **suite.row()})
    return pd.DataFrame(records, columns=None if records else ["column", "group", "n", "n_parsed", "coverage"])
