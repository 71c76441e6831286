"""Collapse check: does one score take most of a critic's predictions?

The failure users report most is a critic that answers the same digit for every clip (VideoPhy's "output is always 4",
critics that approve nearly every video). :func:`check_collapse` counts the parsed integer scores (the argmax of
p(1..5) in expected mode, the parsed answer in generate mode) and flags the run when the most common score takes at
least :data:`~recipe_lib.constants.COLLAPSE_SHARE` of them. When the clips carry labels, the share of the most common
label is given beside it: a split that is 85 % label 4 makes "mostly 4" less alarming, though still uninformative.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from typing import Any

from recipe_lib.constants import COLLAPSE_MIN_PREDICTIONS, COLLAPSE_SHARE, LABEL_COLUMN, SCORE_VALUES
from recipe_lib.inference.record import score_columns


@dataclasses.dataclass
class CollapseCheck:
    """How concentrated one critic's predictions are."""

    n: int  # parsed predictions counted
    counts: dict[str, int]  # score -> predictions ("1".."5")
    top_score: int | None
    top_share: float | None
    share_threshold: float
    min_predictions: int
    checked: bool  # False when fewer than ``min_predictions`` parsed answers
    collapsed: bool
    label_top: int | None = None  # the most common label, when the rows carry labels
    label_top_share: float | None = None

    def message(self, name: str | None = None) -> str | None:
        """One line for a collapsed critic, None otherwise."""
        if not self.collapsed:
            return None
        who = f"{name}: " if name else ""
        top = self.counts[str(self.top_score)]
        line = (
            f"{who}collapse: >= {self.share_threshold * 100:.0f} % of predictions are {self.top_score} "
            f"({top} of {self.n}, {self.top_share * 100:.0f} %)"
        )
        if self.label_top_share is not None:
            line += f"; the labels' most common value, {self.label_top}, is {self.label_top_share * 100:.0f} % of them"
        return line + " - the scores barely separate clips; check the calibration and the confusion matrix"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CollapseCheck:
        """The check :meth:`to_dict` wrote (its derived ``warning`` and ``note`` left out)."""
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["warning"] = self.message()
        if not self.checked:
            out["note"] = f"not checked: {self.n} parsed predictions, fewer than {self.min_predictions}"
        return out


def check_collapse(
    rows: Sequence[dict[str, Any]],
    label_key: str | None = None,
    share: float = COLLAPSE_SHARE,
    min_predictions: int = COLLAPSE_MIN_PREDICTIONS,
    columns: dict[str, list[Any]] | None = None,
) -> CollapseCheck:
    """The collapse check over scored rows (unparsed rows are not predictions and are left out of the shares).
    ``columns``: the rows' :func:`~recipe_lib.inference.record.score_columns` when the caller has read them."""
    columns = columns or score_columns(rows, label_key or LABEL_COLUMN)  # one pass (in SQL for a large run's view)
    scores = [int(s) for s in columns["score"] if s is not None]
    counts = Counter(scores)
    n = len(scores)
    top_score, top_n = counts.most_common(1)[0] if counts else (None, 0)
    top_share = top_n / n if n else None
    checked = n >= min_predictions
    label_top = label_share = None
    if label_key:
        labels = [int(v) for v in columns["label"] if v is not None and v == v]
        if labels:
            label_top, label_n = Counter(labels).most_common(1)[0]
            label_share = label_n / len(labels)
    return CollapseCheck(
        n=n,
        counts={str(v): counts.get(v, 0) for v in SCORE_VALUES},
        top_score=top_score,
        top_share=top_share,
        share_threshold=share,
        min_predictions=min_predictions,
        checked=checked,
        collapsed=bool(checked and top_share is not None and top_share >= share),
        label_top=label_top,
        label_top_share=label_share,
    )
