"""The account of dropped rows shared by the data pipelines: every row that does not reach the output dataset is
recorded with its position, what identifies it, a short reason code and a sentence a person can act on."""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from recipe_lib.io import atomic_write_text


@dataclasses.dataclass
class DroppedRow:
    """One row left out: ``row`` is its position in the source (see the pipeline for how it is counted)."""

    row: int
    reason: str
    detail: str
    video_url: str | None = None
    label: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "reason": self.reason,
            "detail": self.detail,
            "video_url": self.video_url,
            "label": _jsonable(self.label),
        }


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value else None  # NaN -> null
    return str(value)


def count_reasons(dropped: list[DroppedRow]) -> dict[str, int]:
    """Dropped rows per reason code, most common first."""
    return dict(Counter(d.reason for d in dropped).most_common())


def dropped_frame(dropped: list[DroppedRow]):  # noqa: ANN201 - pandas.DataFrame
    """The dropped rows as a table (row, reason, detail, video_url, label), in source order."""
    import pandas as pd

    columns = ["row", "reason", "detail", "video_url", "label"]
    return pd.DataFrame([d.to_dict() for d in sorted(dropped, key=lambda d: d.row)], columns=columns)


def describe_dropped(dropped: list[DroppedRow], limit: int = 20) -> list[str]:
    """Readable lines: one count per reason, then up to ``limit`` rows with their details."""
    if not dropped:
        return ["no rows dropped"]
    lines = [f"dropped {len(dropped)} row(s): " + ", ".join(f"{n} {r}" for r, n in count_reasons(dropped).items())]
    for d in sorted(dropped, key=lambda d: d.row)[:limit]:
        lines.append(f"  row {d.row}: {d.reason} - {d.detail}")
    if len(dropped) > limit:
        lines.append(f"  ... and {len(dropped) - limit} more (all of them are in the report file)")
    return lines


def write_json(path: Path, payload: Any) -> Path:
    """Write JSON atomically (temp file + os.replace)."""
    return atomic_write_text(path, json.dumps(payload, indent=2, ensure_ascii=False, default=_jsonable))


def replace_dir(out_dir: Path, build: Any, marker: str) -> Path:
    """Build a folder with ``build(tmp_dir)`` next to ``out_dir`` and swap it into place.

    A killed run leaves the previous output untouched (plus a hidden temp folder that the next run removes). An existing
    ``out_dir`` is replaced only when it is empty or was written by the same pipeline (it holds ``marker``), so a
    mistyped ``--out`` never deletes someone's folder.
    """
    import shutil

    from recipe_lib.errors import DataError

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / marker).exists())):
        raise DataError(
            f"output folder {out_dir} exists and was not written by this command (no {marker} in it)",
            hint="choose a new --out folder or empty this one",
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    try:
        try:
            tmp.mkdir()
            build(tmp)
        except OSError as exc:
            if exc.filename and not str(exc.filename).startswith(str(tmp)):
                raise
            # Disk full, read-only folder ...: name the output folder, not our hidden temp folder (a library writing
            # an arrow file often names no file at all); the previous output is untouched.
            raise OSError(exc.errno, exc.strerror, str(out_dir)) from exc
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out_dir
