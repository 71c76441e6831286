"""Exploration helpers for notebook 01: the clip table, label counts, cross-tables and example contact sheets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recipe_lib.config import build_dir


def clips_table(source: str | Path | None = None, split: str | None = None):  # noqa: ANN201 - pandas.DataFrame
    """The clips of a dataset folder or table as a DataFrame; ``None`` means the demo profile's synthetic clips."""
    import pandas as pd

    from recipe_lib.data.tables import load_rows

    if source is None:
        from recipe_lib.data.demo import ensure_demo_data

        source = ensure_demo_data().all_dir
    return pd.DataFrame(load_rows(source, split=split))


def label_counts(df: Any, column: str = "pc") -> dict[int, int]:
    counts = df[column].value_counts().sort_index()
    return {int(k): int(v) for k, v in counts.items()}


def crosstab(df: Any, rows: str, columns: str = "pc"):  # noqa: ANN201
    import pandas as pd

    return pd.crosstab(df[rows], df[columns])


def example_sheets(
    df: Any, per_label: int = 1, column: str = "pc", out_dir: Path | None = None, frames: int = 4
) -> list[tuple[Path, str]]:
    """Contact sheets (PNG) of ``per_label`` example clips for each label; returns (png, title) pairs."""
    from recipe_lib.video import contact_sheet

    out_dir = out_dir or build_dir() / "01_dataset_exploration" / "sheets"
    sheets = []
    for label in sorted(df[column].dropna().unique()):
        for _, row in df[df[column] == label].head(per_label).iterrows():
            png = out_dir / f"{Path(str(row['video_url'])).stem}.png"
            contact_sheet(row["video_url"], png, n=frames)
            title = f"pc={int(label)}"
            if "violation" in row:
                title += f" · {row['violation']}"
            sheets.append((png, title))
    return sheets
