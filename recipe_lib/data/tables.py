"""Read a table of clips from any of the forms the recipe uses: a ``datasets.save_to_disk`` folder, CSV, parquet,
JSONL or Excel. Rows are plain dicts; ``video_url`` is the one required column for scoring."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recipe_lib.constants import MAX_TABLE_ROWS
from recipe_lib.errors import DataError

TABLE_SUFFIXES = (".csv", ".parquet", ".jsonl", ".json", ".xlsx")


def _test(check: Any, path: Path) -> bool:
    """``check(path)`` (``Path.is_dir`` ...), False for a path the OS cannot look at (a symlink loop, a name over
    255 bytes): such an input is then reported once, where it is read, instead of a traceback here."""
    try:
        return bool(check(path))
    except (OSError, RuntimeError, ValueError):
        return False


def is_dataset_dir(path: Path) -> bool:
    return _test(Path.is_dir, path) and any(
        _test(Path.exists, path / name) for name in ("dataset_info.json", "state.json", "dataset_dict.json")
    )


def is_table(path: Path) -> bool:
    return _test(Path.is_file, path) and path.suffix.lower() in TABLE_SUFFIXES


def check_table_file(path: Path) -> None:
    """A text table (CSV/JSONL) holds at most ``MAX_TABLE_ROWS`` lines, counted in a streaming pass before it is
    parsed (a few MB of blank rows would otherwise become gigabytes of parsed rows and report entries)."""
    from recipe_lib.constants import MAX_TABLE_ROWS

    if path.suffix.lower() not in (".csv", ".jsonl"):
        return
    lines = 0
    with path.open("rb") as fh:
        for _ in fh:
            lines += 1
            if lines > MAX_TABLE_ROWS + 1:
                raise DataError(
                    f"{path} has more than {MAX_TABLE_ROWS} rows",
                    hint=f"split it into tables of at most {MAX_TABLE_ROWS} rows (blank rows count too)",
                )


def check_columns(columns: list[Any], where: str) -> None:
    """Column names must be unique: a repeated header (two 'pc' columns) would silently pick one of them."""
    names = [str(c).strip() for c in columns]
    dupes = sorted({c for c in names if c and names.count(c) > 1})
    if dupes:
        raise DataError(f"{where}: column name(s) {dupes} appear more than once", hint="rename the copies")


def check_cells(rows: list[dict[str, Any]], where: str, offset: int = 0) -> None:
    """No text cell is longer than ``MAX_CELL_CHARS`` (a 100 MB caption would be tokenised into tens of GB)."""
    from recipe_lib.constants import MAX_CELL_CHARS

    for i, row in enumerate(rows, start=offset):
        for key, value in row.items():
            if isinstance(value, str) and len(value) > MAX_CELL_CHARS:
                raise DataError(
                    f"{where}: row {i} column '{key}' holds {len(value)} characters (at most {MAX_CELL_CHARS})",
                    hint="shorten that cell; captions and notes are short texts",
                )


def _csv_header(path: Path) -> list[str]:
    import csv

    with path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
        return next(csv.reader(fh), [])


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _saved_without_rows(path: Path) -> bool:
    import json

    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("_data_files") == []


STREAMED_SUFFIXES = (".csv", ".jsonl", ".parquet")  # read in chunks, any number of rows
CHUNK_ROWS = 50_000


def iter_rows(
    path: str | Path, split: str | None = None, chunk_rows: int = CHUNK_ROWS
) -> Iterator[list[dict[str, Any]]]:
    """The rows of a dataset folder or table file in chunks of at most ``chunk_rows``. CSV, JSONL and Parquet are
    streamed (pandas' chunked readers, pyarrow's record batches): memory holds one chunk, whatever the number of rows,
    so a table of millions of clips is read as it is scored; so is a dataset folder (``Dataset.iter`` over its
    memory-mapped Arrow files). Excel and JSON arrays are parsed whole, within ``MAX_TABLE_ROWS``. Every chunk gets
    the checks :func:`load_rows` makes (unique columns, cell lengths); an empty table yields nothing."""
    path = Path(path)
    suffix = path.suffix.lower()
    if is_dataset_dir(path):
        ds = _open_dataset(path, split)
        if ds is None:
            return
        check_columns(ds.column_names, str(path))
        offset = 0
        for batch in ds.iter(batch_size=chunk_rows):  # memory-mapped Arrow: one batch decoded at a time
            names = list(batch)
            rows = [dict(zip(names, values)) for values in zip(*(batch[n] for n in names))]
            check_cells(rows, str(path), offset)
            offset += len(rows)
            yield rows
        return
    if suffix not in STREAMED_SUFFIXES:  # Excel and JSON arrays are parsed whole: within MAX_TABLE_ROWS
        rows = load_rows(path, split=split)
        for start in range(0, len(rows), chunk_rows):
            yield rows[start : start + chunk_rows]
        return
    if not path.exists():
        raise DataError(f"table not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(
            f"table {path} is an empty file (0 bytes)", hint="export it again: a header row, then one row per clip"
        )
    if split is not None:
        raise DataError(
            f"{path} is a table, not a dataset folder with splits, so --split {split} names nothing",
            hint="drop --split (it selects a split of a dataset folder that holds several)",
        )
    try:
        offset = 0
        for frame in _frames(path, chunk_rows):
            if offset == 0:
                check_columns(list(frame.columns), str(path))
            rows = [{k: _clean(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]
            check_cells(rows, str(path), offset)
            offset += len(rows)
            yield rows
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        if isinstance(exc, DataError):
            raise
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise DataError(
            f"cannot read {path}: {first}", hint=f"check that it is a valid {suffix.lstrip('.')} file"
        ) from exc


def _frames(path: Path, chunk_rows: int, columns: list[str] | None = None) -> Iterator[Any]:
    """A streamed table file (CSV, JSONL, Parquet) as DataFrames of at most ``chunk_rows`` rows; with ``columns``,
    only those of them the table has (read alone where the format allows: Parquet and CSV)."""
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix == ".csv":
        header = _csv_header(path)
        check_columns(header, str(path))
        usecols = None if columns is None else [c for c in columns if c in header]
        yield from pd.read_csv(path, chunksize=chunk_rows, usecols=usecols)
    elif suffix == ".jsonl":
        for frame in pd.read_json(path, lines=True, chunksize=chunk_rows):
            yield frame if columns is None else frame[[c for c in columns if c in frame.columns]]
    else:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        check_columns(names, str(path))
        selected = None if columns is None else [c for c in columns if c in names]
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=selected):
            yield batch.to_pandas()


def iter_columns(
    path: str | Path, columns: list[str], split: str | None = None, chunk_rows: int = 200_000
) -> Iterator[Any]:
    """Only ``columns`` (those the table has) of a dataset folder or table file, as DataFrames of at most
    ``chunk_rows`` rows, in order: what a check of a few columns over millions of rows reads (Parquet, CSV and
    dataset folders read those columns alone). A table that cannot be read yields what was read before the problem:
    reading it whole (:func:`iter_rows`) reports it."""
    import pandas as pd

    path = Path(path)
    try:
        if is_dataset_dir(path):
            ds = _open_dataset(path, split)
            if ds is not None:
                ds = ds.select_columns([c for c in columns if c in ds.column_names])
                for batch in ds.iter(batch_size=chunk_rows):
                    yield pd.DataFrame(batch)
        elif path.suffix.lower() in STREAMED_SUFFIXES and split is None:
            yield from _frames(path, chunk_rows, columns)
        else:
            rows = load_rows(path, split=split)
            frame = pd.DataFrame(rows)
            yield frame[[c for c in columns if c in frame.columns]]
    except (ValueError, OSError, UnicodeDecodeError):
        return


def _open_dataset(path: Path, split: str | None) -> Any:
    """The dataset (one split) saved in ``path``; None for a dataset saved with no rows."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises many kinds for a damaged or empty folder
        if _saved_without_rows(path):
            return None  # datasets cannot load a dataset saved with zero rows (no data files): it has no rows
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise DataError(
            f"cannot read the dataset folder {path}: {first}",
            hint="pass a folder written by datasets' save_to_disk, or a CSV/parquet/JSONL table",
        ) from exc
    if isinstance(ds, datasets.DatasetDict):
        if split is None:
            if len(ds) != 1:
                raise DataError(f"{path} holds splits {sorted(ds)}", hint="name one with --split")
            split = next(iter(ds))
        if split not in ds:
            raise DataError(f"{path} has no split '{split}'", hint=f"splits: {', '.join(sorted(ds))}")
        ds = ds[split]
    elif split is not None and str(ds.split or "") != split:
        raise DataError(
            f"{path} holds one dataset without splits, so --split {split} names nothing",
            hint="drop --split (it selects a split of a folder that holds several)",
        )
    return ds


def load_rows(path: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """All rows of a dataset folder or table file, at most ``MAX_TABLE_ROWS``: the callers (label sheets for
    training, evaluation sets, outside critics' tables) hold every row at once, so the cap keeps a hostile or
    mistaken file from taking the machine's memory. Scoring streams any number with :func:`iter_rows`."""
    path = Path(path)
    if is_dataset_dir(path):
        ds = _open_dataset(path, split)
        if ds is None:
            return []
        if ds.num_rows > MAX_TABLE_ROWS:
            raise DataError(f"{path} has {ds.num_rows} rows, more than {MAX_TABLE_ROWS}", hint="score it in parts")
        check_columns(ds.column_names, str(path))
        rows = [dict(r) for r in ds]
        check_cells(rows, str(path))
        return rows
    if not path.exists():
        raise DataError(f"table not found: {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(
            f"table {path} is an empty file (0 bytes)", hint="export it again: a header row, then one row per clip"
        )
    if split is not None:
        raise DataError(
            f"{path} is a table, not a dataset folder with splits, so --split {split} names nothing",
            hint="drop --split (it selects a split of a dataset folder that holds several)",
        )
    import pandas as pd

    check_table_file(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        check_columns(_csv_header(path), str(path))
    try:
        if suffix == ".csv":
            df = pd.read_csv(path)
        elif suffix == ".parquet":
            df = pd.read_parquet(path)
        elif suffix in (".jsonl", ".json"):
            df = pd.read_json(path, lines=suffix == ".jsonl")
        elif suffix == ".xlsx":
            df = pd.read_excel(path, engine="openpyxl")
        else:
            raise DataError(f"unsupported table format: {path}", hint=f"use one of {', '.join(TABLE_SUFFIXES)}")
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise DataError(
            f"cannot read {path}: {first}", hint=f"check that it is a valid {suffix.lstrip('.')} file"
        ) from exc
    if len(df) > MAX_TABLE_ROWS:
        raise DataError(f"{path} has {len(df)} rows, more than {MAX_TABLE_ROWS}", hint="score it in parts")
    check_columns(list(df.columns), str(path))
    rows = [{k: _clean(v) for k, v in row.items()} for row in df.to_dict(orient="records")]
    check_cells(rows, str(path))
    return rows
