"""The record of one scored clip: what ``results.sqlite`` holds per row and every export is made from.

Scorers (:mod:`recipe_lib.inference.hf`, :mod:`recipe_lib.inference.vllm`) return the model's part (score,
probabilities, answers, timing); :func:`recipe_lib.inference.scoring.score_videos` adds the identity (cache key,
clip, critic, prompt, mode, task) and the input row (``item``: labels, caption, generator, violation, ...) and stores
:meth:`ScoredClip.to_json`. Rows travel between stages as those JSON dicts; :func:`item_of` and :func:`label_of` read
the input row of one, and :meth:`ScoredClip.from_json` reads a whole row back (rows written before a field existed get
its default).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from recipe_lib.constants import LABEL_COLUMN


@dataclasses.dataclass
class ScoredClip:
    key: str  # cache key: hash of (clip content, critic, prompt, mode, video and sampling settings)
    video: str
    video_sha256: str
    model: str
    prompt: str
    mode: str
    score: int | None = None  # 1-5, None when no answer could be read (``parse_error`` says why)
    expected_score: float | None = None  # sum of s * p(s) (expected mode) or the mean parsed score (generate mode)
    probs: list[float] | None = None  # p(1..5), renormalised over the five digits
    digit_mass: float | None = None  # unnormalised probability of any digit 1-5 as the answer token
    raw_output: str | None = None
    parse_error: str | None = None
    trials: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # every sampled answer (generate mode)
    timing: dict[str, float] = dataclasses.field(default_factory=dict)
    frames: int | None = None
    frame_size: list[int] | None = None
    item: dict[str, Any] = dataclasses.field(default_factory=dict)  # the input row (labels, caption, ...)
    # The task the clip was scored for (recipe_lib.tasks): pc (rows written before tasks existed), sa or rule. A rule
    # row judges one rule (item['rule'], its label item['rule_label']): ``judgement`` is violated / cannot_tell /
    # followed, ``judgement_probs`` their probabilities, ``option_share`` the share of the digit mass on options 1-3.
    task: str = "pc"
    judgement: str | None = None
    judgement_probs: dict[str, float] | None = None
    option_share: float | None = None

    def label(self, column: str = LABEL_COLUMN) -> Any:
        return self.item.get(column)

    def shown_text(self) -> str | None:
        """The caption (task sa) or rule (task rule) written into the prompt, None for pc."""
        fields = self.item.get("prompt_fields") or {}
        return fields.get("caption") or fields.get("rule")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> ScoredClip:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in row.items() if k in names}
        values["item"] = dict(row.get("item") or {})
        values.setdefault("trials", [])
        values["timing"] = dict(row.get("timing") or {})
        return cls(**values)


def item_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """The input row a scored row came from (empty for a loose file)."""
    return row.get("item") or {}


def label_of(row: Mapping[str, Any], column: str = LABEL_COLUMN) -> Any:
    return item_of(row).get(column)


def score_columns(rows: Iterable[Mapping[str, Any]], label_key: str = LABEL_COLUMN) -> dict[str, list[Any]]:
    """``score``, ``expected_score``, ``parse_error`` and ``label`` (the input row's ``label_key``) of every row, as
    lists in row order: read in SQL from a run's store when ``rows`` is a view of it (a million rows in about a
    second), else from the dicts. What the collapse check and the metric suite read."""
    columns = getattr(rows, "columns", None)
    found = columns(label_key) if callable(columns) else None
    if found is not None:
        return found
    out: dict[str, list[Any]] = {"score": [], "expected_score": [], "parse_error": [], "label": []}
    for row in rows:
        out["score"].append(row.get("score"))
        out["expected_score"].append(row.get("expected_score"))
        out["parse_error"].append(row.get("parse_error"))
        out["label"].append(label_of(row, label_key))
    return out
