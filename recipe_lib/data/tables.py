"""Read a table of clips from any of the forms the recipe uses: a ``datasets.save_to_disk`` folder, CSV, parquet,
JSONL or Excel. Rows are plain dicts; ``video_url`` is the one required column for scoring."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from recipe_lib.errors import DataError

TABLE_SUFFIXES = (".csv", ".parquet", ".jsonl", ".json", ".xlsx")


def is_dataset_dir(path: Path) -> bool:
    return path.is_dir() and (
        (path / "dataset_info.json").exists() or (path / "state.json").exists() or (path / "dataset_dict.json").exists()
    )


def is_table(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in TABLE_SUFFIXES


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def load_rows(path: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """All rows of a dataset folder or table file."""
    path = Path(path)
    if is_dataset_dir(path):
        import datasets

        ds = datasets.load_from_disk(str(path))
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
        raise DataError(f"cannot read {path}: {exc}") from exc
    return [{k: _clean(v) for k, v in row.items()} for row in df.to_dict(orient="records")]
