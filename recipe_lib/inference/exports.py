"""The per-clip files of a scoring run (``scores.csv``, ``skipped.jsonl``) written by streaming: rows come from the
store (or a list, for small runs) a chunk at a time and are appended to a temporary file that replaces the old one
whole (:func:`recipe_lib.io.atomic_writer`), so a run of millions of clips is exported in the memory of one chunk.

``scores.csv`` has the columns :func:`~recipe_lib.inference.score_config.results_frame` gives one row; the optional
input columns (violation, scene, ...) that any row has are found before the first line is written (in SQL for a
store), so every chunk writes the same header. Each row is flattened from its stored JSON and written with the csv
module (:func:`flat_record`, :func:`csv_rows`: the cells pandas' ``to_csv`` would write), with no DataFrame per chunk.
Whole scores and labels are written as integers in every chunk (``4``, not ``4.0`` in a chunk that happens to hold an
unparsed row), so a file does not change with where its chunks fall.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from recipe_lib.inference.score_config import OPTIONAL_ITEM_COLUMNS, flat_record, results_frame
from recipe_lib.io import atomic_writer, csv_text, defuse_cell, json_default

EXPORT_CHUNK = 10_000  # rows per chunk while exporting


def chunks(rows: Iterable[Any], size: int = EXPORT_CHUNK) -> Iterator[list[Any]]:
    it = iter(rows)
    while batch := list(itertools.islice(it, size)):
        yield batch


def optional_columns_present(rows: Iterable[dict[str, Any]]) -> set[str]:
    """Which of the optional input columns any of ``rows`` carries (the Python twin of the store's SQL scan)."""
    found: set[str] = set()
    for row in rows:
        found.update(k for k in OPTIONAL_ITEM_COLUMNS if k in (row.get("item") or {}))
        if len(found) == len(OPTIONAL_ITEM_COLUMNS):
            break
    return found


WHOLE_COLUMNS = ("score", "label")  # written as integers when whole, in every chunk


def _column(values: list[Any], whole: bool) -> list[Any]:
    """One column of a chunk as the csv writer should get it: the writer itself writes None as an empty cell, numbers
    and other objects by ``str`` (a float by ``repr``, as pandas' ``to_csv``); what is left is NaN (empty), a whole
    score or label (an integer) and text a spreadsheet would run as a formula (:func:`recipe_lib.io.defuse_cell`).
    Decided per column, so a column of plain numbers is passed through untouched."""
    kinds = set(map(type, values))
    if float in kinds:
        values = [None if v != v else (int(v) if whole and v.is_integer() else v) if type(v) is float else v
                  for v in values]  # fmt: skip
    if str in kinds:
        values = [defuse_cell(v) if type(v) is str else v for v in values]
    return values


def csv_rows(records: list[dict[str, Any]], columns: list[str]) -> Iterator[tuple[Any, ...]]:
    """``records`` as CSV rows of ``columns`` (a missing field is an empty cell), every cell as pandas' ``to_csv``
    writes it (:func:`_column`), built a column at a time without a DataFrame."""
    return zip(*(_column([rec.get(c) for rec in records], c in WHOLE_COLUMNS) for c in columns))


def csv_writer(fh: Any) -> Any:
    """The csv writer of every export (pandas' ``to_csv`` dialect: minimal quoting, ``\\n`` line ends)."""
    return csv.writer(fh, lineterminator="\n")


def write_scores_csv(path: Path, rows: Iterable[dict[str, Any]], label_column: str, optional: set[str]) -> int:
    """``scores.csv`` from ``rows`` (streamed) with the csv module, a chunk of rows at a time; returns how many rows
    had no score (unparsed). The columns are the first chunk's (as its DataFrame would order them), with the optional
    input columns any row has after ``model_s``."""
    unparsed = 0
    columns: list[str] | None = None
    with atomic_writer(path) as fh:
        writer = csv_writer(fh)
        for batch in chunks(rows):
            records = [flat_record(row, label_column) for row in batch]
            if columns is None:
                head = list(dict.fromkeys(k for rec in records for k in rec if k not in OPTIONAL_ITEM_COLUMNS))
                at = head.index("model_s") + 1
                columns = [*head[:at], *(c for c in OPTIONAL_ITEM_COLUMNS if c in optional), *head[at:]]
                writer.writerow([defuse_cell(c) for c in columns])
            unparsed += sum(1 for rec in records if rec["score"] is None or rec["score"] != rec["score"])
            writer.writerows(csv_rows(records, columns))
        if columns is None:  # no rows: the header alone, as an empty frame writes it
            fh.write(csv_text(results_frame([], label_column)))
    return unparsed


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """A JSONL file from ``records`` (streamed); returns how many lines it has."""
    n = 0
    with atomic_writer(path) as fh:
        for batch in chunks(records):
            fh.write("".join(json.dumps(r, default=json_default) + "\n" for r in batch))
            n += len(batch)
    return n
