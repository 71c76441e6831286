"""Scores from an outside critic as a baseline: a table (CSV, parquet or JSONL) of video → score, optionally p1..p5,
joined by video to the evaluation data and measured exactly like our critics (``plausibility evaluate --critic
NAME=scores.csv``).

The table needs a **video column** (the first of :data:`VIDEO_COLUMNS` present: a path, URL, file name or name
without extension) and a **score column** (the first of :data:`SCORE_COLUMNS`) and/or all of ``p1``..``p5``. A video
is matched to an evaluation clip by its full path or URL, else by its file name, else by its name without extension
(``examples/A_jetski_..._0.mp4`` in VideoPhy-2-AutoEval's output matches ``/data/videophy2/A_jetski_..._0.mp4``).

Nothing is dropped silently:

* evaluation clips the table has no row for are listed as skips (``no score from NAME in TABLE``) and counted in the
  summary ("10 of 20 clips have no score from NAME");
* rows naming no evaluation clip are counted and listed (``unknown_rows``) — normal when the table covers a larger
  split than the one evaluated; when *no* row matches, it is an error;
* a row whose score cell is empty becomes an unparsed prediction (the critic gave no score), counted in coverage;
* a non-numeric or out-of-range score (outside 1-5), a bad p1..p5 cell, two rows for one clip, or a name that matches
  several clips is an error that names the row.

A score that is not a whole number (an outside critic's mean or expected score) is kept as the continuous value
(``expected_score``: ROC-AUC, thresholds, the keep/reject decision) and rounded to the nearest digit for the discrete
metrics (accuracy, confusion matrix). With p1..p5 the expected score is their weighted mean.
"""

from __future__ import annotations

import dataclasses
import math
import os
import urllib.parse
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from recipe_lib.constants import SCORE_MAX, SCORE_MIN
from recipe_lib.data.tables import load_rows
from recipe_lib.errors import DataError
from recipe_lib.inference.record import ScoredClip
from recipe_lib.inference.score_config import ScoreResult

OUTSIDE_SUFFIXES = (".csv", ".parquet", ".jsonl")
VIDEO_COLUMNS = ("video", "video_url", "videopath", "video_path", "path", "video_id", "id", "filename", "file", "name")
SCORE_COLUMNS = ("score", "pc", "prediction", "pred")
PROB_COLUMNS = ("p1", "p2", "p3", "p4", "p5")
PROB_TOLERANCE = 0.01  # p1..p5 must sum to 1 within this (then renormalised)
_LISTED = 10  # unknown rows shown in a message


def is_outside_table(value: str | os.PathLike[str]) -> bool:
    """Whether a ``--critic`` value names a scores table rather than a model (by its suffix)."""
    return Path(str(value)).suffix.lower() in OUTSIDE_SUFFIXES


@dataclasses.dataclass
class OutsideScoreResult(ScoreResult):
    """An outside critic's rows (one per evaluation clip it scored) and what did not join."""

    name: str = ""
    table: str = ""
    n_table_rows: int = 0
    video_column: str = ""
    score_column: str | None = None
    has_probs: bool = False
    unknown: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # {"row": i, "video": value}

    @property
    def n_missing(self) -> int:
        return len(self.skipped)

    def summary(self) -> dict[str, Any]:
        return {
            **super().summary(),
            "source": "table",
            "table": self.table,
            "table_rows": self.n_table_rows,
            "video_column": self.video_column,
            "score_column": self.score_column,
            "has_probs": self.has_probs,
            "missing": self.n_missing,
            "unknown_rows": len(self.unknown),
            "unknown": self.unknown[:_LISTED],
        }

    def join_lines(self) -> list[str]:
        """What did not join, in words."""
        lines = []
        if self.n_missing:
            lines.append(f"{self.n_missing} of {self.n_inputs} clips have no score from {self.name} ({self.table})")
        if self.unknown:
            shown = ", ".join(f"row {u['row']} ({u['video']})" for u in self.unknown[:3])
            more = f" and {len(self.unknown) - 3} more" if len(self.unknown) > 3 else ""
            lines.append(
                f"{len(self.unknown)} of {self.n_table_rows} rows of {self.table} name clips not in the eval data: "
                f"{shown}{more}"
            )
        return lines


def _pick(columns: Sequence[str], candidates: Sequence[str]) -> str | None:
    lower = {str(c).strip().lower(): str(c) for c in columns}
    return next((lower[c] for c in candidates if c in lower), None)


def _number(value: Any, where: str, what: str) -> float | None:
    """A cell as a float; None when empty; an error when it is not a finite number."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, bool):
        raise DataError(f"{where}: {what} {value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(
            f"{where}: {what} {value!r} is not a number", hint="fix the cell, or leave it empty for 'no score'"
        ) from None
    if not math.isfinite(number):
        raise DataError(f"{where}: {what} {value!r} is not a finite number")
    return number


def _names(value: str) -> tuple[str, str, str]:
    """(full, file name, name without extension) of a path, URL or id."""
    text = value.strip()
    parsed = urllib.parse.urlparse(text)
    path = urllib.parse.unquote(parsed.path) if parsed.scheme in ("http", "https", "s3", "gs") else text
    name = PurePosixPath(path.replace("\\", "/")).name
    stem = PurePosixPath(name).stem if "." in name else name
    return text, name, stem


class _ClipIndex:
    """Evaluation clips by full path/URL, file name and stem."""

    def __init__(self, items: Sequence[dict[str, Any]]) -> None:
        self.levels: list[dict[str, set[int]]] = [{}, {}, {}]
        for i, item in enumerate(items):
            for field in ("video_url", "source_url"):
                value = item.get(field)
                if not value:
                    continue
                full, name, stem = _names(str(value))
                keys = [{full, os.path.normpath(full)}, {name}, {stem}]
                for level, names in zip(self.levels, keys):
                    for key in names:
                        level.setdefault(key, set()).add(i)

    def match(self, value: str, where: str) -> int | None:
        full, name, stem = _names(value)
        for level, keys in zip(self.levels, ({full, os.path.normpath(full)}, {name}, {stem})):
            hits = set().union(*(level.get(k, set()) for k in keys))
            if len(hits) == 1:
                return next(iter(hits))
            if len(hits) > 1:
                raise DataError(
                    f"{where}: video {value!r} matches {len(hits)} clips of the eval data",
                    hint="give the full path or URL of each clip in the table, so names shared by clips in "
                    "different folders are not ambiguous",
                )
        return None


def _row_prediction(
    row: dict[str, Any], score_column: str | None, has_probs: bool, where: str
) -> tuple[int | None, float | None, list[float] | None]:
    """(score, expected score, probs) of one table row; all None when the row gives no score."""
    probs = None
    if has_probs:
        values = [_number(row.get(c), where, c) for c in PROB_COLUMNS]
        if any(v is not None for v in values):
            if any(v is None for v in values):
                raise DataError(f"{where}: p1..p5 are partly empty", hint="fill all five or leave all five empty")
            if any(v < 0 or v > 1 for v in values):  # type: ignore[operator]
                raise DataError(f"{where}: p1..p5 = {values} must each be within 0-1")
            total = sum(values)  # type: ignore[arg-type]
            if abs(total - 1) > PROB_TOLERANCE:
                raise DataError(
                    f"{where}: p1..p5 sum to {total:.4f}, not 1",
                    hint=f"p1..p5 are the probabilities of the answers 1-5 (within {PROB_TOLERANCE} of 1)",
                )
            probs = [float(v) / total for v in values]  # type: ignore[arg-type]
    score = _number(row.get(score_column), where, score_column) if score_column else None
    if score is not None and not SCORE_MIN <= score <= SCORE_MAX:
        raise DataError(
            f"{where}: {score_column} {row.get(score_column)!r} is outside {SCORE_MIN}-{SCORE_MAX}",
            hint="the table's scores must be on the critic's 1-5 scale (rescale other scales first)",
        )
    if probs is not None:
        expected = sum(p * s for p, s in zip(probs, range(SCORE_MIN, SCORE_MAX + 1)))
        digit = int(max(range(5), key=lambda k: probs[k]) + 1) if score is None else int(math.floor(score + 0.5))
        return digit, expected, probs
    if score is None:
        return None, None, None
    return int(math.floor(score + 0.5)), float(score), None


def load_outside_scores(
    name: str, table: str | os.PathLike[str], items: Sequence[dict[str, Any]], out_dir: Path | None = None
) -> OutsideScoreResult:
    """Join an outside critic's table to the evaluation ``items`` (rows as :func:`resolve_inputs` gives them)."""
    path = Path(table)
    if not path.is_file():
        raise DataError(
            f"scores table of critic '{name}' not found: {path}",
            hint="--critic NAME=FILE.csv|parquet|jsonl names a table of video -> score",
        )
    rows = load_rows(path)
    if not rows:
        raise DataError(f"scores table {path} has no rows", hint="one row per video: a video column and a score")
    columns = list(rows[0])
    video_column = _pick(columns, VIDEO_COLUMNS)
    if video_column is None:
        raise DataError(
            f"scores table {path} has no video column",
            hint=f"name one of {', '.join(VIDEO_COLUMNS)}; its columns: {', '.join(map(str, columns))}",
        )
    score_column = _pick(columns, SCORE_COLUMNS)
    present = [c for c in PROB_COLUMNS if _pick(columns, [c])]
    if present and len(present) < 5:
        raise DataError(
            f"scores table {path} has {', '.join(present)} but not all of p1..p5",
            hint="give all five probabilities or none",
        )
    has_probs = len(present) == 5
    if has_probs:
        rows = [{**r, **{c: r.get(_pick(columns, [c]) or c) for c in PROB_COLUMNS}} for r in rows]
    if score_column is None and not has_probs:
        raise DataError(
            f"scores table {path} has no score column",
            hint=f"name one of {', '.join(SCORE_COLUMNS)} (or give p1..p5); "
            f"its columns: {', '.join(map(str, columns))}",
        )
    index = _ClipIndex(items)
    by_item: dict[int, tuple[int, tuple[int | None, float | None, list[float] | None]]] = {}
    unknown: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        where = f"{path.name} row {i}"
        video = row.get(video_column)
        if video is None or not str(video).strip():
            raise DataError(f"{where}: no video in column '{video_column}'", hint="every row needs the video it scores")
        prediction = _row_prediction(row, score_column, has_probs, where)
        hit = index.match(str(video), where)
        if hit is None:
            unknown.append({"row": i, "video": str(video)})
            continue
        if hit in by_item:
            first = by_item[hit][0]
            raise DataError(
                f"{path.name}: rows {first} and {i} both score the clip {Path(str(items[hit]['video_url'])).name}",
                hint="keep one row per video in the scores table",
            )
        by_item[hit] = (i, prediction)
    if not by_item:
        first_clip = str(items[0]["video_url"]) if items else "(no clips)"
        raise DataError(
            f"none of the {len(rows)} rows of {path} names a clip of the eval data",
            hint=f"column '{video_column}' is matched by full path, file name or name without extension; its first "
            f"value is {str(rows[0].get(video_column))!r}, the first eval clip {first_clip!r}",
        )
    scored: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for j, item in enumerate(items):
        video = str(item["video_url"])
        if j not in by_item:
            skipped.append({"video": video, "reason": f"no score from {name} in {path.name}"})
            continue
        row_i, (score, expected, probs) = by_item[j]
        scored.append(
            ScoredClip(
                key=f"table:{name}:{row_i}",
                video=video,
                video_sha256="",
                model=f"{name} ({path.name})",
                prompt="",
                mode="table",
                score=score,
                expected_score=expected,
                probs=probs,
                parse_error=None if score is not None else f"no score in {path.name} row {row_i} (empty cell)",
                item=dict(item),
            ).to_json()
        )
    return OutsideScoreResult(
        out_dir=Path(out_dir) if out_dir else path.parent,
        rows=scored,
        skipped=skipped,
        n_inputs=len(items),
        n_scored_now=0,
        n_cached=0,
        seconds=0.0,
        name=name,
        table=str(path),
        n_table_rows=len(rows),
        video_column=video_column,
        score_column=score_column,
        has_probs=has_probs,
        unknown=unknown,
    )
