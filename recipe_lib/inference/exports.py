"""The per-clip files of a scoring run (``scores.csv``, ``skipped.jsonl``) written by streaming: rows come from the
store (or a list, for small runs) a chunk at a time and are appended to a temporary file that replaces the old one
whole (:func:`recipe_lib.io.atomic_writer`), so a run of millions of clips is exported in the memory of one chunk.

``scores.csv`` has the columns :func:`~recipe_lib.inference.score_config.results_frame` gives one row; the optional
input columns (violation, scene, ...) that any row has are found before the first line is written (in SQL for a
store), so every chunk writes the same header. Whole scores and labels are written as integers in every chunk (``4``,
not ``4.0`` in a chunk that happens to hold an unparsed row), so a file does not change with where its chunks fall.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from recipe_lib.inference.score_config import OPTIONAL_ITEM_COLUMNS, results_frame
from recipe_lib.io import atomic_writer, csv_text, json_default

EXPORT_CHUNK = 10_000  # rows per DataFrame while exporting


def chunks(rows: Iterable[Any], size: int = EXPORT_CHUNK) -> Iterator[list[Any]]:
    it = iter(rows)
    while batch := list(itertools.islice(it, size)):
        yield batch


def _whole_numbers(frame: Any, column: str) -> None:
    """``column`` as nullable integers when every value in it is a whole number (scores, 1-5 labels)."""
    import pandas as pd

    if column not in frame.columns or not pd.api.types.is_numeric_dtype(frame[column].dtype):
        return
    values = frame[column].dropna()
    if len(values) == len(frame[column]) and pd.api.types.is_integer_dtype(frame[column].dtype):
        return
    if (values == values.round()).all():
        frame[column] = frame[column].astype("Int64")


def optional_columns_present(rows: Iterable[dict[str, Any]]) -> set[str]:
    """Which of the optional input columns any of ``rows`` carries (the Python twin of the store's SQL scan)."""
    found: set[str] = set()
    for row in rows:
        found.update(k for k in OPTIONAL_ITEM_COLUMNS if k in (row.get("item") or {}))
        if len(found) == len(OPTIONAL_ITEM_COLUMNS):
            break
    return found


def write_scores_csv(path: Path, rows: Iterable[dict[str, Any]], label_column: str, optional: set[str]) -> int:
    """``scores.csv`` from ``rows`` (streamed); returns how many rows had no score (unparsed)."""
    import pandas as pd

    unparsed = 0
    columns: list[str] | None = None
    with atomic_writer(path) as fh:
        for batch in chunks(rows):
            frame = results_frame(batch, label_column)
            if columns is None:
                head = [c for c in frame.columns if c not in OPTIONAL_ITEM_COLUMNS]
                at = head.index("model_s") + 1
                columns = [*head[:at], *(c for c in OPTIONAL_ITEM_COLUMNS if c in optional), *head[at:]]
            frame = frame.reindex(columns=columns)
            for column in ("score", "label"):
                _whole_numbers(frame, column)
            unparsed += int(frame["score"].isna().sum())
            fh.write(csv_text(frame, header=fh.tell() == 0))
        if columns is None:  # no rows: the header alone, as an empty frame writes it
            fh.write(csv_text(pd.DataFrame(results_frame([], label_column))))
    return unparsed


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """A JSONL file from ``records`` (streamed); returns how many lines it has."""
    n = 0
    with atomic_writer(path) as fh:
        for batch in chunks(records):
            fh.write("".join(json.dumps(r, default=json_default) + "\n" for r in batch))
            n += len(batch)
    return n
