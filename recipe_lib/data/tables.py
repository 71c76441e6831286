"""Read a table of clips from any of the forms the recipe uses: a ``datasets.save_to_disk`` folder, CSV, parquet,
JSONL or Excel. Rows are plain dicts; ``video_url`` is the one required column for scoring."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

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


def load_rows(path: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """All rows of a dataset folder or table file."""
    path = Path(path)
    if is_dataset_dir(path):
        import datasets

        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as exc:  # datasets raises many kinds for a damaged or empty folder
            if _saved_without_rows(path):
                return []  # datasets cannot load a dataset saved with zero rows (no data files): it has no rows
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
        return [dict(r) for r in ds]
    if not path.exists():
        raise DataError(f"table not found: {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(
            f"table {path} is an empty file (0 bytes)", hint="export it again: a header row, then one row per clip"
        )
    import pandas as pd

    suffix = path.suffix.lower()
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
    return [{k: _clean(v) for k, v in row.items()} for row in df.to_dict(orient="records")]
