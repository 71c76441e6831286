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
    labelled = [r for r in rows if (r.get("item") or {}).get(label_key) is not None]
    labels = [int((r["item"])[label_key]) for r in labelled]
    return core_metrics(labels, [r.get("score") for r in labelled])
