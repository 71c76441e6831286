"""Resumable result store: one JSON object per line, appended and fsynced per batch.

A row's ``key`` hashes (video content, model, prompt, mode, sampling settings), so a rerun skips exactly the work that
is done and any change of settings scores again. A run killed mid-write leaves at most one partial last line; it is cut
off on the next open (and counted in ``repaired_bytes``), so no half-written row is ever read back. An exclusive lock
stops two processes appending to the same store at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from recipe_lib.errors import RecipeError


def result_key(**parts: Any) -> str:
    """Stable hash of the settings that determine a result."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class ResultStore:
    """Append-only JSONL keyed by ``row['key']``. Use as a context manager to hold the lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.repaired_bytes = 0
        self._rows: dict[str, dict[str, Any]] = {}
        self._lock_fh = None

    def __enter__(self) -> ResultStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock_fh = lock_path.open("a")
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock_fh.close()
            self._lock_fh = None
            raise RecipeError(
                f"another run is writing {self.path}", hint="wait for it to finish or choose another --out folder"
            ) from exc
        self._load()

    def close(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def _load(self) -> None:
        self._rows.clear()
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good_end = 0
        offset = 0
        for line in data.splitlines(keepends=True):
            end = offset + len(line)
            if line.endswith(b"\n"):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    break
                if isinstance(row, dict) and "key" in row:
                    self._rows.setdefault(row["key"], row)
                good_end = end
            offset = end
        if good_end < len(data):
            self.repaired_bytes = len(data) - good_end
            with self.path.open("r+b") as fh:
                fh.truncate(good_end)

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows.values())

    def get(self, key: str) -> dict[str, Any] | None:
        return self._rows.get(key)

    def append(self, rows: Iterable[dict[str, Any]]) -> int:
        """Append new rows (those whose key is not stored yet) durably; returns how many were written."""
        fresh = [r for r in rows if r["key"] not in self._rows]
        if not fresh:
            return 0
        payload = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in fresh).encode("utf-8")
        start = self.path.stat().st_size if self.path.exists() else 0
        try:
            with self.path.open("ab") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            # Disk full or a size limit mid-write: cut the partial batch off now (the next open would too), and name
            # the file in the error.
            with contextlib.suppress(OSError), self.path.open("r+b") as fh:
                fh.truncate(start)
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
        for r in fresh:
            self._rows[r["key"]] = r
        return len(fresh)


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Complete rows of a JSONL file (a partial last line is ignored)."""
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            if line.endswith("\n"):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    return
