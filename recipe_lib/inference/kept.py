"""Exported files a rerun keeps: a run of a million clips whose rows, order, skips and settings are what the last run
exported does not write ``scores.csv``, the predictions and the manifest again (minutes of formatting for the same
bytes).

Each set of exports is recorded under a name in the store's ``exports`` table once written: the *basis* it was written
from (the run's digest, :meth:`~recipe_lib.inference.store.ResultStore.finish_run`; the settings that shape the files;
this library's version and export format), the stat signature of every file (device, inode, size, mtime and ctime in
nanoseconds, as for input digests), and what writing returned (counts). :func:`kept_exports` gives that back only when
the basis is equal and every file is still the one written: a file edited, replaced, touched or removed is written
again, and so is everything when a clip was scored or a stored row found damaged in this run (the caller says so).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recipe_lib import __version__
from recipe_lib.inference.store import ResultStore, signature, store_path

EXPORT_FORMAT = 1  # raised when the bytes an export writes for the same rows change


def _signatures(paths: Sequence[Path]) -> list[list[int]] | None:
    try:
        return [list(signature(os.stat(p))) for p in paths]
    except OSError:
        return None


def _canonical(basis: dict[str, Any]) -> str:
    """The basis as the stamp keeps it: a hash (the settings may hold an endpoint's API key, never written)."""
    text = json.dumps({**basis, "version": __version__, "format": EXPORT_FORMAT}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def kept_exports(out_dir: str | Path, name: str, basis: dict[str, Any], paths: Sequence[Path]) -> dict[str, Any] | None:
    """What writing ``paths`` returned when they were written from ``basis`` and are unchanged since; else None."""
    with ResultStore(store_path(out_dir), lock=False) as store:
        stamp = store.export_stamp(name)
    if not stamp or stamp.get("basis") != _canonical(basis) or stamp.get("files") != [str(p) for p in paths]:
        return None
    if stamp.get("signatures") != _signatures(paths):
        return None
    result = stamp.get("result")
    return result if isinstance(result, dict) else None


def keep_exports(
    out_dir: str | Path, name: str, basis: dict[str, Any], paths: Sequence[Path], result: dict[str, Any]
) -> None:
    """Record that ``paths`` were just written from ``basis``, and what writing them returned (JSON)."""
    signatures = _signatures(paths)
    stamp = None
    if signatures is not None:
        stamp = {"basis": _canonical(basis), "files": [str(p) for p in paths], "signatures": signatures,
                 "result": result}  # fmt: skip
    with ResultStore(store_path(out_dir), lock=False) as store:
        store.set_export_stamp(name, stamp)
