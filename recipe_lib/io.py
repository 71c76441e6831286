"""Crash-safe file writing, used by every stage: a file is written under a temporary name beside it and moved into
place in one ``os.replace``, so a killed run (or a full disk) never leaves a partial file under the final name; JSONL
logs are appended and fsynced line by line and read back up to the first damaged line."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring); the temporary file is removed on failure and
    the error names ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if exc.filename and str(exc.filename) != str(tmp):
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_default(value: Any) -> Any:
    """JSON for numpy scalars/arrays, paths and anything else (as its string)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def atomic_write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=indent, default=json_default) + "\n")


def jsonl_text(rows: Iterable[Any]) -> str:
    return "".join(json.dumps(r, default=json_default) + "\n" for r in rows)


def atomic_write_jsonl(path: str | Path, rows: Iterable[Any]) -> Path:
    return atomic_write_text(path, jsonl_text(rows))


def append_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    """Append rows to a JSONL file and fsync, so a row that was appended survives a kill."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(jsonl_text(rows))
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Complete rows of a JSONL file, up to the first line cut short by a kill (everything before it is intact)."""
    path = Path(path)
    if not path.exists():
        return
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                return
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                return
