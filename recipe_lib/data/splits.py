"""Label tools: stratified train/eval split, label balancing and label scaling (all seeded and reported).

* :func:`stratified_split` keeps every label's share in both parts; :func:`split_report` tabulates the result.
* :func:`balance_labels` resamples every label to the mean count per label (the recipe's GRPO data, where a skewed
  label distribution makes the policy collapse onto the most common score). Apply it to the training split only, after
  splitting, so no evaluation clip is copied into training and the evaluation keeps the real label distribution.
* :func:`scale_labels` maps labels from a declared range onto the critic's 1-5 scale (binary 0/1 becomes 1/5).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

from recipe_lib.errors import DataError

SCORE_MIN, SCORE_MAX = 1, 5


def stratified_split(ds: Any, eval_size: float = 0.1, seed: int = 42, label_column: str = "pc") -> tuple[Any, Any]:
    """Split a ``datasets.Dataset`` so every label keeps its share in both parts.

    Raises :class:`DataError` naming the label when a label has too few clips to appear in both splits.
    """
    from collections import Counter

    import numpy as np

    if not 0 < eval_size < 1:
        raise DataError(f"eval_size must be between 0 and 1, got {eval_size}")
    if label_column not in ds.column_names:
        raise DataError(f"no '{label_column}' column to stratify on", hint=f"columns: {', '.join(ds.column_names)}")
    labels = list(ds[label_column])
    counts = Counter(labels)
    thin = sorted(k for k, c in counts.items() if c < 2)
    if thin:
        raise DataError(
            f"label(s) {thin} have fewer than 2 clips, so they cannot appear in both train and eval",
            hint="add clips with those labels, merge labels, or drop them before splitting",
        )
    rng = np.random.default_rng(seed)
    eval_idx: list[int] = []
    for label in sorted(counts, key=str):
        idx = np.array([i for i, v in enumerate(labels) if v == label])
        rng.shuffle(idx)
        k = min(max(1, int(round(len(idx) * eval_size))), len(idx) - 1)
        eval_idx.extend(int(i) for i in idx[:k])
    chosen = set(eval_idx)
    train_idx = [i for i in range(len(labels)) if i not in chosen]
    return ds.select(train_idx), ds.select(sorted(eval_idx))


@dataclasses.dataclass
class SplitReport:
    """Label counts per split (``counts[split][label]``) and the eval share of each label."""

    label_column: str
    counts: dict[str, dict[Any, int]]

    @property
    def sizes(self) -> dict[str, int]:
        return {name: sum(c.values()) for name, c in self.counts.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "label_column": self.label_column,
            "sizes": self.sizes,
            "counts": {name: {str(k): v for k, v in c.items()} for name, c in self.counts.items()},
        }

    def frame(self):  # noqa: ANN201 - pandas.DataFrame
        """One row per label: count in each split, total and the eval share."""
        import pandas as pd

        labels = sorted({k for c in self.counts.values() for k in c}, key=_label_order)
        table = pd.DataFrame(
            {name: [c.get(k, 0) for k in labels] for name, c in self.counts.items()},
            index=pd.Index(labels, name=self.label_column),
        )
        table["total"] = table.sum(axis=1)
        if "eval" in table.columns:
            table["eval share"] = (table["eval"] / table["total"].where(table["total"] > 0)).round(3)
        return table


def _label_order(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def _counts(values: Iterable[Any]) -> dict[Any, int]:
    c = Counter(values)
    return {k: c[k] for k in sorted(c, key=_label_order)}


def split_report(train: Any, evaluation: Any, label_column: str = "pc") -> SplitReport:
    """Label counts of a train/eval pair of ``datasets.Dataset`` (see :class:`SplitReport`)."""
    for name, ds in (("train", train), ("eval", evaluation)):
        if label_column not in ds.column_names:
            raise DataError(
                f"{name} split has no '{label_column}' column", hint=f"columns: {', '.join(ds.column_names)}"
            )
    return SplitReport(label_column, {"train": _counts(train[label_column]), "eval": _counts(evaluation[label_column])})


@dataclasses.dataclass
class BalanceReport:
    """What :func:`balance_labels` did: counts per label before and after, the target count and the seed."""

    label_column: str
    before: dict[Any, int]
    after: dict[Any, int]
    target: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "label_column": self.label_column,
            "target_per_label": self.target,
            "seed": self.seed,
            "before": {str(k): v for k, v in self.before.items()},
            "after": {str(k): v for k, v in self.after.items()},
            "rows_before": sum(self.before.values()),
            "rows_after": sum(self.after.values()),
        }

    def frame(self):  # noqa: ANN201 - pandas.DataFrame
        import pandas as pd

        labels = sorted(self.before, key=_label_order)
        return pd.DataFrame(
            {"before": [self.before[k] for k in labels], "after": [self.after.get(k, 0) for k in labels]},
            index=pd.Index(labels, name=self.label_column),
        )


def balance_labels(ds: Any, label_column: str = "pc", seed: int = 42) -> tuple[Any, BalanceReport]:
    """Resample every label to the mean count per label (rounded half up), seeded.

    A label with fewer clips than the target keeps all of them and is topped up by drawing from them *with*
    replacement; a label with more is cut down to a random subset drawn *without* replacement. Labels that do not
    occur are not invented. The result is shuffled (same seed), so copies of a clip are not next to each other.
    Returns the new dataset and a :class:`BalanceReport`.
    """
    import numpy as np

    if label_column not in ds.column_names:
        raise DataError(f"no '{label_column}' column to balance", hint=f"columns: {', '.join(ds.column_names)}")
    labels = list(ds[label_column])
    if not labels:
        raise DataError("cannot balance an empty dataset")
    missing = [i for i, v in enumerate(labels) if v is None or (isinstance(v, float) and math.isnan(v))]
    if missing:
        raise DataError(f"{len(missing)} row(s) have no label (first: row {missing[0]})", hint="drop or fix them first")
    before = _counts(labels)
    target = math.floor(len(labels) / len(before) + 0.5)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in before:
        idx = np.array([i for i, v in enumerate(labels) if v == label])
        if len(idx) >= target:
            chosen.extend(int(i) for i in rng.choice(idx, size=target, replace=False))
        else:
            chosen.extend(int(i) for i in idx)
            chosen.extend(int(i) for i in rng.choice(idx, size=target - len(idx), replace=True))
    order = rng.permutation(len(chosen))
    out = ds.select([chosen[i] for i in order])
    return out, BalanceReport(label_column, before, _counts(out[label_column]), target, seed)


def scale_labels(values: Iterable[Any], src_min: float, src_max: float) -> list[int]:
    """Map labels from the declared range ``[src_min, src_max]`` linearly onto 1-5 and round to whole scores.

    ``score = 1 + 4 * (value - src_min) / (src_max - src_min)``, rounded half up (2.5 -> 3, 3.5 -> 4; not Python's
    round-half-to-even), so binary 0/1 maps to 1/5, a 0-1 value of 0.5 to 3, and a 0-10 rating of 5 to 3.
    Raises :class:`DataError` listing the offending values when a value is missing, not a number or outside the range.
    """
    if not (isinstance(src_min, int | float) and isinstance(src_max, int | float)) or not src_min < src_max:
        raise DataError(f"label range must have min < max, got {src_min!r}..{src_max!r}")
    values = list(values)
    bad: list[str] = []
    numbers: list[float] = []
    for i, v in enumerate(values):
        number = as_number(v)
        if number is None or not src_min <= number <= src_max:
            bad.append(f"#{i}: {v!r}")
        else:
            numbers.append(number)
    if bad:
        shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise DataError(
            f"{len(bad)} label(s) outside the declared range {src_min:g}-{src_max:g}: {shown}",
            hint="fix those labels, drop those rows, or declare the range the labels really use",
        )
    span = src_max - src_min
    return [int(math.floor(SCORE_MIN + (SCORE_MAX - SCORE_MIN) * (x - src_min) / span + 0.5)) for x in numbers]


def as_number(value: Any) -> float | None:
    """A finite float from a number or numeric text; ``None`` for anything else (booleans included)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def as_score(value: Any) -> int | None:
    """A whole 1-5 score from ``value`` (``4``, ``4.0``, ``"4"``), else ``None``."""
    number = as_number(value)
    if number is None or number != int(number) or not SCORE_MIN <= number <= SCORE_MAX:
        return None
    return int(number)
