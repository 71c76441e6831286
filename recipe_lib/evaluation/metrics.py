"""Agreement between a critic's scores and human labels.

Unparsed outputs are never dropped silently: ``n`` counts every labelled clip, ``n_parsed`` those with a score, and
``coverage`` = n_parsed / n. Rank and correlation metrics are computed on the parsed clips; ``accuracy`` counts an
unparsed clip as wrong (so a critic cannot look better by failing to answer), while ``accuracy_parsed`` is over parsed
clips only. Correlations are NaN (not an error) when either side is constant.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from recipe_lib.inference.record import item_of, label_of, score_columns


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
# needs the continuous value of each clip: it is a function of the counts of (distinct value, good/bad) cells, so a
# resample is one ``bincount`` too (no sort, no scipy). Above BOOTSTRAP_PER_CLIP_MAX clips the cell counts themselves
# are drawn (bootstrap_method).
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
    bootstrap_method: str = "clips"  # bootstrap_method(n): how the resamples were drawn

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
            "bootstrap": {
                "resamples": self.n_boot,
                "seed": self.seed,
                "confidence": self.confidence,
                "method": self.bootstrap_method,
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricSuite:
        """The suite :meth:`to_dict` wrote (a number it wrote as null, NaN, is NaN again)."""

        def num(value: Any) -> float:
            return float("nan") if value is None else value

        boot = data["bootstrap"]
        return cls(
            n=data["n"],
            n_parsed=data["n_parsed"],
            coverage=num(data["coverage"]),
            threshold=data["threshold"],
            values={k: num(v) for k, v in data["metrics"].items()},
            intervals={k: (num(lo), num(hi)) for k, (lo, hi) in data["intervals"].items()},
            confusion=np.array(data["confusion"]["counts"]),
            n_good=data["n_good"],
            majority_label=data["majority_label"],
            majority_accuracy=num(data["majority_accuracy"]),
            n_boot=boot["resamples"],
            seed=boot["seed"],
            confidence=boot["confidence"],
            unparsed_reasons=dict(data["unparsed_reasons"]),
            bootstrap_method=boot["method"],
        )

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


# Up to this many clips each resample draws clips (indices with replacement). Above it a resample draws the counts of
# the cells the metrics read from one multinomial, which is the same resampling distribution (a resample of n clips
# with replacement is a multinomial draw of n over the cells they fall in) at a cost that does not grow with n: 1000
# resamples of a million clips take about a second instead of minutes.
BOOTSTRAP_PER_CLIP_MAX = 10_000
AUC_GRID = 1000  # above BOOTSTRAP_PER_CLIP_MAX, ROC-AUC's cells are expected scores rounded to 1/AUC_GRID, by good/bad


def bootstrap_method(n: int) -> str:
    """How the bootstrap of ``n`` clips draws its resamples, as reports and ``evaluation_results.json`` state it."""
    if n <= BOOTSTRAP_PER_CLIP_MAX:
        return "clips"
    return (
        f"multinomial counts of cells (above {BOOTSTRAP_PER_CLIP_MAX:,} clips): the confusion table's cells; for "
        f"ROC-AUC, expected score rounded to 1/{AUC_GRID} by good/bad"
    )


def _auc_cells(
    values: np.ndarray, positive: np.ndarray, parsed: np.ndarray, grid: int | None
) -> tuple[np.ndarray, int]:
    """Each clip's ROC-AUC cell, and how many cells: 2 * (rank of its value among the distinct values, rounded to
    1/``grid`` when given) + good; unparsed clips share the last cell. ROC-AUC is a function of these counts
    (:func:`_auc_from_counts`), so a resample is one ``bincount``, with no sort."""
    kept = np.where(parsed, values, 0.0)
    levels, rank = np.unique(np.round(kept[parsed] * grid) if grid else kept[parsed], return_inverse=True)
    cells = np.full(len(values), 2 * len(levels), dtype=np.int64)
    cells[parsed] = 2 * rank + positive[parsed]
    return cells, 2 * len(levels) + 1


def _auc_from_counts(counts: np.ndarray) -> np.ndarray:
    """ROC-AUC (mid-ranks for ties) per row of (B, 2 * levels + 1) cell counts, cells as :func:`_auc_cells`."""
    neg = counts[:, 0:-1:2].astype(float)
    pos = counts[:, 1:-1:2].astype(float)
    below = np.cumsum(neg, axis=1) - neg
    u = (pos * (below + neg / 2.0)).sum(1)
    return _nan_div(u, pos.sum(1) * neg.sum(1))


def _cell_resamples(rng: np.random.Generator, n: int, cells: np.ndarray, k: int, n_boot: int) -> Iterator[np.ndarray]:
    """``n_boot`` multinomial resamples of the counts of ``k`` cells (one per clip in ``cells``), in blocks."""
    p = np.bincount(cells, minlength=k) / n
    block = max(1, min(n_boot, 2_000_000 // k))
    done = 0
    while done < n_boot:
        b = min(block, n_boot - done)
        yield rng.multinomial(n, p, size=b)
        done += b


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
    unparsed). The resamples are drawn in blocks so memory stays bounded for large splits; above
    ``BOOTSTRAP_PER_CLIP_MAX`` clips they are drawn as cell counts (:func:`bootstrap_method`).
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
    if n > BOOTSTRAP_PER_CLIP_MAX:
        for tables in _cell_resamples(rng, n, codes, 30, n_boot):
            res = table_metrics(tables.reshape(-1, 5, 6), threshold)
            for k in names:
                if k != "roc_auc":
                    collected[k].append(res[k])
        cells, k_cells = _auc_cells(values, positive, parsed, grid=AUC_GRID)
        for counts in _cell_resamples(rng, n, cells, k_cells, n_boot):
            collected["roc_auc"].append(_auc_from_counts(counts))
    else:
        auc_cells, k_cells = _auc_cells(values, positive, parsed, grid=None)
        block = max(1, min(n_boot, 2_000_000 // max(n, 1)))
        done = 0
        while done < n_boot:
            b = min(block, n_boot - done)
            idx = rng.integers(0, n, size=(b, n))
            flat = (codes[idx] + 30 * np.arange(b)[:, None]).ravel()
            tables = np.bincount(flat, minlength=30 * b).reshape(b, 5, 6)
            res = table_metrics(tables, threshold)
            flat = (auc_cells[idx] + k_cells * np.arange(b)[:, None]).ravel()
            res["roc_auc"] = _auc_from_counts(np.bincount(flat, minlength=k_cells * b).reshape(b, k_cells))
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
    auc_cells, k_cells = _auc_cells(cont, y >= threshold, parsed, grid=None)
    values["roc_auc"] = float(_auc_from_counts(np.bincount(auc_cells, minlength=k_cells)[None, :])[0])
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
        bootstrap_method=bootstrap_method(len(y)),
    )


def any_label(labels: Iterable[Any]) -> bool:
    """Whether any of ``labels`` is one (not None, not NaN)."""
    return any(not (value is None or (isinstance(value, float) and math.isnan(value))) for value in labels)


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
    columns: dict[str, list[Any]] | None = None,
) -> MetricSuite:
    """The metric suite over scored result rows (``row['item'][label_key]`` is the label); unlabelled rows are left
    out (count them with :func:`labelled_rows`), unparsed rows stay in and count as wrong where stated. ``columns``:
    the rows' :func:`~recipe_lib.inference.record.score_columns` when the caller has read them."""
    from collections import Counter

    # One pass over the rows (in SQL for a view of a large run's store): only the columns the metrics read.
    columns = columns or score_columns(rows, label_key)
    labels, scores, expected = [], [], []
    reasons: Counter[str] = Counter()
    for label, score, exp, error in zip(
        columns["label"], columns["score"], columns["expected_score"], columns["parse_error"]
    ):
        if label is None or (isinstance(label, float) and math.isnan(label)):
            continue
        labels.append(label)
        scores.append(score)
        expected.append(exp)
        if score is None:
            reasons[unparsed_reason({"parse_error": error})] += 1
    return evaluate_predictions(
        labels,
        scores,
        expected,
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


# ---------------------------------------------------------------------------------------------------------------------
# Tasks beyond pc (recipe_lib.tasks): the joint metric of SA and PC, and the per-rule judgements.
# ---------------------------------------------------------------------------------------------------------------------

JOINT_METRICS: dict[str, str] = {
    "joint_rate": "share of clips the critic puts at sa >= t and pc >= t (VideoPhy-2's leaderboard number); a clip "
    "with an unparsed sa or pc counts as not joint",
    "label_joint_rate": "share of labelled clips whose human sa and pc are both >= t",
    "accuracy": "per-clip joint (yes/no) agreement with the labels; unparsed counts as wrong",
    "precision": "of clips predicted joint, share labelled joint (parsed)",
    "recall": "of clips labelled joint, share predicted joint (parsed)",
    "f1": "joint-vs-not F1 (parsed)",
}


@dataclasses.dataclass
class JointSuite:
    """The joint metric over clips scored for both pc and sa: values with bootstrap intervals and a 2x3 table (label
    not joint / joint down, predicted not joint / joint / unparsed across)."""

    n: int  # clips with a pc and an sa result
    n_parsed: int  # clips whose pc and sa both parsed
    n_labelled: int  # clips with both labels
    threshold: float
    values: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    confusion: np.ndarray
    n_boot: int
    seed: int
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "n_parsed": self.n_parsed,
            "n_labelled": self.n_labelled,
            "threshold": self.threshold,
            "metrics": {k: _clean(v) for k, v in self.values.items()},
            "intervals": {k: [_clean(lo), _clean(hi)] for k, (lo, hi) in self.intervals.items()},
            "confusion": {
                "rows": ["not joint", "joint"],
                "columns": ["not joint", "joint", "unparsed"],
                "counts": self.confusion.astype(int).tolist(),
            },
            "bootstrap": {"resamples": self.n_boot, "seed": self.seed, "confidence": self.confidence},
        }

    def row(self) -> dict[str, Any]:
        rec: dict[str, Any] = {"n": self.n, "n_parsed": self.n_parsed, "n_labelled": self.n_labelled}
        for name in JOINT_METRICS:
            lo, hi = self.intervals[name]
            rec.update({name: self.values[name], f"{name}_lo": lo, f"{name}_hi": hi})
        return rec


def _resampled(n: int, n_boot: int, seed: int, keys: Any, stats: Any) -> dict[str, np.ndarray]:
    """``stats(idx)`` (a dict of per-resample arrays) over ``n_boot`` bootstrap resamples of ``n`` rows, drawn in blocks
    of at most ~2 M indices; empty arrays when there is nothing to resample."""
    samples: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    if n and n_boot > 0:
        rng = np.random.default_rng(seed)
        block = max(1, min(n_boot, 2_000_000 // max(n, 1)))
        done = 0
        while done < n_boot:
            b = min(block, n_boot - done)
            res = stats(rng.integers(0, n, size=(b, n)))
            for k in keys:
                samples[k].append(res[k])
            done += b
    return {k: np.concatenate(v) if v else np.array([]) for k, v in samples.items()}


def _joint_stats(pred: np.ndarray, lab: np.ndarray) -> dict[str, np.ndarray]:
    """Joint metrics batched over a leading axis (``pred``: 1 joint, 0 not, -1 unparsed; ``lab``: -1 unlabelled)."""
    n = pred.shape[-1]
    labelled = lab >= 0
    tp = ((pred == 1) & (lab == 1)).sum(-1)
    fp = ((pred == 1) & (lab == 0)).sum(-1)
    fn = ((pred == 0) & (lab == 1)).sum(-1)
    tn = ((pred == 0) & (lab == 0)).sum(-1)
    return {
        "joint_rate": _nan_div((pred == 1).sum(-1), np.full(pred.shape[:-1], n)),
        "label_joint_rate": _nan_div((lab == 1).sum(-1), labelled.sum(-1)),
        "accuracy": _nan_div(tp + tn, labelled.sum(-1)),
        "precision": _nan_div(tp, tp + fp),
        "recall": _nan_div(tp, tp + fn),
        "f1": _nan_div(2 * tp, 2 * tp + fp + fn),
    }


def _percentile_intervals(
    samples: dict[str, np.ndarray], names: Sequence[str], confidence: float
) -> dict[str, tuple[float, float]]:
    alpha = (1.0 - confidence) / 2.0
    out = {}
    for k in names:
        arr = np.asarray(samples[k], dtype=float)
        arr = arr[~np.isnan(arr)]
        if not len(arr):
            out[k] = (float("nan"), float("nan"))
        else:
            lo, hi = np.quantile(arr, [alpha, 1 - alpha])
            out[k] = (float(lo), float(hi))
    return out


def _as_value(x: Any) -> float | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return float(x)


def joint_suite(
    records: Sequence[dict[str, Any]],
    threshold: float = DEFAULT_THRESHOLD,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> JointSuite:
    """The joint metric from per-clip records with ``pc_value`` / ``sa_value`` (the critic's, None when unparsed)
    and ``pc_label`` / ``sa_label`` (None when unlabelled); see :data:`JOINT_METRICS`. A clip is joint when both are
    at least ``threshold`` (4: VideoPhy-2's SA >= 4 and PC >= 4)."""
    pred = np.full(len(records), -1, dtype=int)
    lab = np.full(len(records), -1, dtype=int)
    for i, r in enumerate(records):
        pv, sv = _as_value(r.get("pc_value")), _as_value(r.get("sa_value"))
        if pv is not None and sv is not None:
            pred[i] = int(pv >= threshold and sv >= threshold)
        pl, sl = _as_value(r.get("pc_label")), _as_value(r.get("sa_label"))
        if pl is not None and sl is not None:
            lab[i] = int(pl >= threshold and sl >= threshold)
    point = _joint_stats(pred[None, :], lab[None, :])
    values = {k: float(point[k][0]) for k in JOINT_METRICS}
    confusion = np.zeros((2, 3), dtype=int)
    for p, y in zip(pred, lab):
        if y >= 0:
            confusion[y, 2 if p < 0 else p] += 1
    n = len(records)
    merged = _resampled(n, n_boot, seed, JOINT_METRICS, lambda idx: _joint_stats(pred[idx], lab[idx]))
    return JointSuite(
        n=n,
        n_parsed=int((pred >= 0).sum()),
        n_labelled=int((lab >= 0).sum()),
        threshold=float(threshold),
        values=values,
        intervals=_percentile_intervals(merged, list(JOINT_METRICS), confidence),
        confusion=confusion,
        n_boot=n_boot,
        seed=seed,
        confidence=confidence,
    )


RULE_METRICS: dict[str, str] = {
    "accuracy": "judgement equals the rule's label (violated / cannot tell / followed); unparsed counts as wrong",
    "accuracy_parsed": "the same over parsed judgements only",
    "violated_recall": "of rules labelled violated, share judged violated",
    "followed_recall": "of rules labelled followed, share judged followed",
    "cannot_tell_recall": "of rules labelled cannot tell, share judged cannot tell",
}


@dataclasses.dataclass
class RuleSuite:
    """Per-rule judgements against the rule columns: accuracy (with intervals), per-class counts and a 3x4 table
    (labels violated / cannot_tell / followed down, judgements and "unparsed" across)."""

    n: int
    n_parsed: int
    coverage: float
    values: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    confusion: np.ndarray
    label_counts: dict[str, int]
    judgement_counts: dict[str, int]
    majority_label: str | None
    majority_accuracy: float
    n_boot: int
    seed: int
    confidence: float
    unparsed_reasons: dict[str, int] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from recipe_lib.tasks import RULE_CLASSES

        return {
            "n": self.n,
            "n_parsed": self.n_parsed,
            "coverage": _clean(self.coverage),
            "metrics": {k: _clean(v) for k, v in self.values.items()},
            "intervals": {k: [_clean(lo), _clean(hi)] for k, (lo, hi) in self.intervals.items()},
            "confusion": {
                "rows": list(RULE_CLASSES),
                "columns": [*RULE_CLASSES, "unparsed"],
                "counts": self.confusion.astype(int).tolist(),
            },
            "label_counts": dict(self.label_counts),
            "judgement_counts": dict(self.judgement_counts),
            "majority_label": self.majority_label,
            "majority_accuracy": _clean(self.majority_accuracy),
            "unparsed_reasons": dict(self.unparsed_reasons),
            "bootstrap": {"resamples": self.n_boot, "seed": self.seed, "confidence": self.confidence},
        }

    def confusion_frame(self) -> Any:
        import pandas as pd

        from recipe_lib.tasks import RULE_CLASSES

        return pd.DataFrame(
            self.confusion,
            index=pd.Index(list(RULE_CLASSES), name="label"),
            columns=pd.Index([*RULE_CLASSES, "unparsed"], name="judged"),
        )


def _rule_stats(tables: np.ndarray) -> dict[str, np.ndarray]:
    """Rule metrics from (..., 3, 4) tables."""
    n = tables.sum((-2, -1))
    parsed = tables[..., :3]
    correct = np.trace(parsed, axis1=-2, axis2=-1)
    out = {
        "accuracy": _nan_div(correct, n),
        "accuracy_parsed": _nan_div(correct, parsed.sum((-2, -1))),
    }
    for k, name in enumerate(("violated", "cannot_tell", "followed")):
        out[f"{name}_recall"] = _nan_div(tables[..., k, k], tables[..., k, :].sum(-1))
    return out


def rule_suite(
    labels: Sequence[str],
    judgements: Sequence[str | None],
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    unparsed_reasons: dict[str, int] | None = None,
) -> RuleSuite:
    """Rule judgements (violated / cannot_tell / followed, None when unparsed) against the labels the rule columns
    give; see :data:`RULE_METRICS`."""
    from recipe_lib.errors import DataError
    from recipe_lib.tasks import RULE_CLASSES

    if len(labels) != len(judgements):
        raise DataError(f"{len(labels)} rule labels but {len(judgements)} judgements")
    index = {c: i for i, c in enumerate(RULE_CLASSES)}
    y = np.empty(len(labels), dtype=int)
    s = np.empty(len(labels), dtype=int)
    for i, (lab, jud) in enumerate(zip(labels, judgements)):
        if lab not in index:
            raise DataError(f"rule label #{i} is {lab!r}", hint=f"rule labels are {', '.join(RULE_CLASSES)}")
        y[i] = index[lab]
        s[i] = 3 if jud is None else index[jud]
    codes = y * 4 + s
    table = np.bincount(codes, minlength=12).reshape(3, 4)
    point = _rule_stats(table)
    values = {k: float(point[k]) for k in RULE_METRICS}
    n = len(labels)

    def resampled_tables(idx: np.ndarray) -> dict[str, np.ndarray]:
        b = idx.shape[0]
        flat = (codes[idx] + 12 * np.arange(b)[:, None]).ravel()
        return _rule_stats(np.bincount(flat, minlength=12 * b).reshape(b, 3, 4))

    merged = _resampled(n, n_boot, seed, RULE_METRICS, resampled_tables)
    label_counts = {c: int(table[k].sum()) for k, c in enumerate(RULE_CLASSES)}
    judged = {c: int(table[:, k].sum()) for k, c in enumerate(RULE_CLASSES)}
    judged["unparsed"] = int(table[:, 3].sum())
    majority = max(label_counts, key=lambda c: label_counts[c]) if n else None
    return RuleSuite(
        n=n,
        n_parsed=int((s < 3).sum()),
        coverage=float((s < 3).mean()) if n else float("nan"),
        values=values,
        intervals=_percentile_intervals(merged, list(RULE_METRICS), confidence),
        confusion=table,
        label_counts=label_counts,
        judgement_counts=judged,
        majority_label=majority,
        majority_accuracy=label_counts[majority] / n if majority is not None else float("nan"),
        n_boot=n_boot,
        seed=seed,
        confidence=confidence,
        unparsed_reasons=dict(unparsed_reasons or {}),
    )


def rule_suite_from_rows(
    rows: Sequence[dict[str, Any]], n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> RuleSuite:
    """:func:`rule_suite` over stored rule rows (label ``item['rule_label']``, the row's ``judgement``)."""
    from collections import Counter

    labelled = [r for r in rows if item_of(r).get("rule_label")]
    reasons = Counter(unparsed_reason(r) for r in labelled if r.get("judgement") is None)
    return rule_suite(
        [item_of(r)["rule_label"] for r in labelled],
        [r.get("judgement") for r in labelled],
        n_boot=n_boot,
        seed=seed,
        confidence=confidence,
        unparsed_reasons=dict(reasons),
    )
