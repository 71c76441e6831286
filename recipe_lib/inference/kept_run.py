"""A rerun whose inputs are unchanged since the last finished run of its task: the plan is the one stored, not worked
out again row by row.

Planning a table (:func:`~recipe_lib.inference.plan.iter_plan`) reads every row, stats its clip, finds the clip's
digest and key, and compares the run's order with the last run's: about 45 µs a row in Python, most of a minute for a
million rows that all come out as they did. What the plan is follows from three things only:

* the *basis*: the settings every key hashes (:func:`~recipe_lib.inference.plan.plan_setup`: model, prompt, mode,
  video and sampling settings, dtype, backend), the task, and the options that choose and read the rows (the inputs
  as given and made absolute, the label and caption columns, ``limit``), with this library's version;
* the *files*: each input table or clip, and every clip a table names, by path and stat signature (device, inode,
  size, mtime and ctime in nanoseconds, as the digest cache tells a file hashed before: a file rewritten, touched or
  replaced has another);
* the store's rows, which a run adds to and changes only to repair a damaged one.

When a run of the local engine finishes with every listed clip scored or stored (no skip but duplicates, no damaged
row, no store warning), the store records both hashes with what the run counted (:func:`run_stamp`); the files are
stat'ed *before* planning, so a file changed while the run planned shows as changed next time. A later run computes
them again (:func:`input_state`: one read of each table's ``video_url`` column, one ``stat`` per path in a tight
loop, no row decoded: a few seconds for a million files, which a run that plans anyway pays on top) and, when both
match the stamp, its run order, input rows and skips are the stored ones:
it goes straight to the result, which is then the normal path's to the byte (:func:`kept_run`). Anything else takes
the normal path, unchanged: a URL or a folder among the inputs (what they list can change without a local file
changing), a glob, a split, the Ray engine, a missing file, a file changed less than
:data:`~recipe_lib.inference.plan.SETTLED_NS` ago (a write in the same clock tick keeps the signature: not recorded),
or a last run with skips other than duplicates (a missing or unreadable clip is tried again). Any run of the task
forgets the stamp when it starts (:meth:`~recipe_lib.inference.store.ResultStore.start_run`), so a killed run leaves
none.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recipe_lib import __version__
from recipe_lib.data.download import is_remote
from recipe_lib.data.tables import is_table, iter_columns
from recipe_lib.errors import RecipeError
from recipe_lib.inference.plan import SETTLED_NS, table_video_path
from recipe_lib.inference.score_config import ScoreConfig
from recipe_lib.inference.store import ResultStore

PLAN_FORMAT = 1  # raised when what a plan makes of the same inputs and settings changes
_BLOCK = 50_000  # paths stat'ed per block: their signatures are hashed a block at a time, memory stays small


@dataclasses.dataclass
class InputState:
    """What a run's plan follows from (see the module docstring): ``basis`` hashes the settings and options,
    ``files`` every input file's path and stat signature; ``settled`` says that no file changed in the last
    ``SETTLED_NS``, so the state may be recorded for the next run."""

    basis: str
    files: str
    settled: bool


def _basis(cfg: ScoreConfig, settings: dict[str, Any]) -> str:
    parts = {
        "settings": settings,
        "task": cfg.task,
        "model": cfg.model,
        "prompt": cfg.prompt,
        "inputs": [[raw, os.path.abspath(raw)] for raw in cfg.inputs],  # a relative input reads from the cwd
        "label_column": cfg.label_column,
        "require_label_column": cfg.require_label_column,
        "caption_column": cfg.caption_column,
        "limit": cfg.limit,
        "version": __version__,
        "format": PLAN_FORMAT,
    }
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class _NotLocal(Exception):
    """A row names something other than a local file: the run is planned."""


def _local_inputs(cfg: ScoreConfig) -> tuple[list[Path], list[str]] | None:
    """The inputs as (tables, clips), when each is a local table or video file; None for a URL, a folder or a
    dataset folder (its listing can change without a file of it changing), a glob, a missing file, a split, or the
    Ray engine."""
    if cfg.engine != "local" or cfg.split is not None:
        return None
    tables: list[Path] = []
    clips: list[str] = []
    for raw in cfg.inputs:
        if not isinstance(raw, str) or is_remote(raw) or any(ch in raw for ch in "*?["):
            return None
        path = Path(raw)
        if is_table(path):
            tables.append(path)
        elif os.path.isfile(raw):
            clips.append(str(path))
        else:
            return None
    return tables, clips


def _resolved(url: str, base: Path) -> str:
    """A table's ``video_url`` as the row reader resolves it (:func:`~recipe_lib.inference.plan.table_video_path`)."""
    if not url or is_remote(url):
        raise _NotLocal(url)
    return table_video_path(url, base)


def _named_files(tables: list[Path], clips: list[str], counts: list[int]) -> Iterator[list[str]]:
    """Every file the inputs name, a block at a time, in an order fixed by the inputs: the tables, the clips their
    rows name, the clips given as inputs; each table's row count is appended to ``counts`` once it is read. Raises
    :class:`_NotLocal` for a row that names a URL, an empty cell or a value that is not a path."""
    yield list(map(str, tables))
    for table in tables:
        base = table.parent
        rows = 0
        for frame in iter_columns(table, ["video_url"]):
            if "video_url" not in frame:
                raise _NotLocal("no video_url column")
            rows += len(frame)
            # Distinct within the chunk (in C, in the order of first appearance): a table that names a few clips a
            # million times stats each a few times a chunk, a table of a million clips each once.
            values = frame["video_url"].unique().tolist()
            if set(map(type, values)) - {str}:
                raise _NotLocal("a value that is not a path")
            if ("\0" + "\0".join(values)).count("\0/") != len(values):  # not all absolute (no path holds a NUL)
                values = [_resolved(url, base) for url in values]
            yield values
        counts.append(rows)  # a table read short would not match the count of the run that read it whole
    yield clips


def input_state(cfg: ScoreConfig, settings: dict[str, Any]) -> InputState | None:
    """The :class:`InputState` of a run of ``cfg`` (``settings``: :attr:`PlanSetup.settings`), or None when its
    inputs are not all local tables and files, or one of them cannot be read or stat'ed. The tables are read a chunk
    at a time and each chunk's files stat'ed before the next: memory holds one chunk, whatever the table's size."""
    import numpy as np

    inputs = _local_inputs(cfg)
    if inputs is None:
        return None
    counts: list[int] = []
    digest = hashlib.sha256()
    stat = os.stat
    newest = 0
    try:
        for files in _named_files(*inputs, counts):
            digest.update("\0".join(files).encode("utf-8", "surrogateescape") + b"\n")
            for start in range(0, len(files), _BLOCK):
                sigs = np.array(
                    [
                        (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                        for st in map(stat, files[start : start + _BLOCK])
                    ],
                    dtype=np.int64,
                ).reshape(-1, 5)
                digest.update(sigs.tobytes())
                newest = max(newest, int(sigs[:, 3:].max()))
    except (_NotLocal, RecipeError):
        return None  # planning reads the rows and says what they are
    except (OSError, OverflowError):
        return None  # a file missing now (planning makes it a skip), or a signature past 64 bits
    digest.update(json.dumps(counts).encode())
    settled = time.time_ns() - newest > SETTLED_NS
    return InputState(_basis(cfg, settings), digest.hexdigest(), settled)


def run_stamp(state: InputState, digest: str, counts: dict[str, Any]) -> dict[str, Any]:
    """What the store keeps of a finished run for :func:`kept_run`: the input state it was planned from, its digest
    (:meth:`~recipe_lib.inference.store.ResultStore.finish_run`) and what a rerun of it counts."""
    return {"basis": state.basis, "files": state.files, "digest": digest, **counts}


def kept_run(store: ResultStore, task: str, state: InputState) -> dict[str, Any] | None:
    """The stamp of the last finished run of ``task`` when ``state`` is the one it was planned from and its rows and
    skips are all still in the store; else None (plan again).

    The run found every row whole (it stored them or checked them), and any change or removal of a stored row, or
    of a run's order or skips, forgets the stamps (the store's triggers, whoever writes: a run repairing a row, a
    SQLite tool); rows or skips added show in the counts. So the rows are not checked again one by one (a
    ``json_valid`` pass over a million rows takes seconds)."""
    stamp = store.run_stamp(task)
    if not stamp or stamp.get("basis") != state.basis or stamp.get("files") != state.files:
        return None
    if store.run_counts(task) != (stamp.get("rows"), stamp.get("skips")):
        return None
    return stamp
