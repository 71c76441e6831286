"""Resumable result store: one SQLite database per output folder (``results.sqlite``), one row per scored clip.

Why SQLite in WAL mode, and not JSONL or Parquet shards:

* **Opening costs nothing per row.** Rows stay on disk; a rerun asks which of its keys are missing (an index lookup
  per key), so opening a store of 10 M rows takes the memory of the keys asked about, not of the rows, and seconds.
  A JSONL file has to be read whole to know what is in it.
* **Atomic batches.** A batch of rows is one transaction: a kill (or a full disk) mid-write leaves the previous batch
  and nothing of the new one; SQLite's journal cuts the torn tail on the next open. Parallel writers (several
  processes on one store) take turns on the write lock, so their rows never interleave or tear.
* **Damage stays local.** Each row is its own record; a row whose text was damaged is reported by its position and
  skipped (its clip is scored again and the row replaced), never a reason to drop the rows after it.
* **Well kept and everywhere.** ``sqlite3`` ships with Python, the file format is stable and documented, and any
  SQLite tool can read it. Parquet shards would need a compaction step and cannot be appended to row by row.

Each row is stored as ASCII JSON (``ensure_ascii``), so any file name round-trips, including names that are not
UTF-8 (Python keeps their bytes as lone surrogates, which JSON escapes as ``\\udcxx``).

A row's ``key`` hashes (video content, model, prompt, mode, sampling settings), so a rerun skips exactly the work that
is done and any change of settings scores again. An exclusive lock (``results.sqlite.lock``) stops two runs scoring
into the same folder at once.

The input files' sha256 digests are kept too (``file_digests``, by path and stat signature: device, inode, size,
mtime and ctime in nanoseconds), so a rerun over a million files stats them instead of reading them again
(:class:`FileDigests`); any change of the signature reads the file again.

What the last finished run of each task was planned from is kept as well (``run_stamps``: hashes of its settings and
of its input files' stat signatures, and its counts), so a rerun whose inputs are unchanged takes its order from
``run_keys`` without planning every row again (:mod:`recipe_lib.inference.kept_run`). A run forgets its task's stamp
when it starts; a row or an order changed from outside forgets them all (triggers).

Older output folders hold ``results.jsonl``: it is imported once on the first open (damaged lines in its middle are
reported by line number and skipped, a torn last line is cut) and renamed ``results.jsonl.imported``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import os
import resource
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from recipe_lib.errors import RecipeError

STORE_NAME = "results.sqlite"
LEGACY_NAME = "results.jsonl"
_CHUNK = 900  # keys per IN (...) query, under SQLite's bound-parameter limit everywhere

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    pos INTEGER PRIMARY KEY,  -- insertion order: the position a damaged row is reported by
    key TEXT NOT NULL UNIQUE,
    row TEXT NOT NULL         -- the row as ASCII JSON
);
-- The clips of the latest run of each task, in input order (``seq``), and its skips: what the exports stream from
-- (scores.csv, skipped.jsonl, the manifest), so a run of millions of clips never holds them in Python lists.
CREATE TABLE IF NOT EXISTS run_keys (
    task TEXT NOT NULL,
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    item TEXT,                -- the input row as this run listed it (name, labels ...), ASCII JSON: what exports show
    PRIMARY KEY (task, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS run_keys_key ON run_keys (task, key);
CREATE TABLE IF NOT EXISTS run_skips (
    task TEXT NOT NULL,
    seq INTEGER NOT NULL,
    skip TEXT NOT NULL,       -- {"video": ..., "reason": ...} as ASCII JSON
    PRIMARY KEY (task, seq)
);
-- The sha256 of each input file already read, by its path (made absolute, symlinks not resolved) and its stat
-- signature: a rerun stats its files instead of reading them again; a file whose signature changed is read again.
CREATE TABLE IF NOT EXISTS file_digests (
    path TEXT PRIMARY KEY,
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
) WITHOUT ROWID;
-- What each set of exported files was written from (the run's digest and the settings), their stat signatures once
-- written, and what writing them returned: a rerun whose run and settings are unchanged keeps files still as written.
CREATE TABLE IF NOT EXISTS exports (
    name TEXT PRIMARY KEY,
    stamp TEXT NOT NULL       -- JSON
) WITHOUT ROWID;
-- What the last finished run of each task was planned from (hashes of its settings and of its input files' stat
-- signatures) and what it counted: a rerun whose inputs are unchanged takes its plan from here
-- (recipe_lib.inference.kept_run). Forgotten when a run of the task starts.
CREATE TABLE IF NOT EXISTS run_stamps (
    task TEXT PRIMARY KEY,
    stamp TEXT NOT NULL       -- JSON
) WITHOUT ROWID;
-- A stored row changed or removed, or a run's order or skips changed, by anything but a run's own listing (which
-- forgets its stamp first), a SQLite tool included: no plan is taken from those stamps any more. Rows added are
-- seen by the counts a stamp keeps.
CREATE TRIGGER IF NOT EXISTS results_updated AFTER UPDATE ON results BEGIN DELETE FROM run_stamps; END;
CREATE TRIGGER IF NOT EXISTS results_deleted AFTER DELETE ON results BEGIN DELETE FROM run_stamps; END;
CREATE TRIGGER IF NOT EXISTS run_keys_updated AFTER UPDATE ON run_keys
    BEGIN DELETE FROM run_stamps WHERE task IN (OLD.task, NEW.task); END;
CREATE TRIGGER IF NOT EXISTS run_keys_deleted AFTER DELETE ON run_keys
    BEGIN DELETE FROM run_stamps WHERE task = OLD.task; END;
CREATE TRIGGER IF NOT EXISTS run_skips_updated AFTER UPDATE ON run_skips
    BEGIN DELETE FROM run_stamps WHERE task IN (OLD.task, NEW.task); END;
CREATE TRIGGER IF NOT EXISTS run_skips_deleted AFTER DELETE ON run_skips
    BEGIN DELETE FROM run_stamps WHERE task = OLD.task; END;
"""


def result_key(**parts: Any) -> str:
    """Stable hash of the settings that determine a result."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def store_path(out_dir: str | Path) -> Path:
    """The result store of an output folder."""
    return Path(out_dir) / STORE_NAME


_ROW_JSON = json.JSONEncoder(ensure_ascii=True, default=str)  # made once: json.dumps with options makes one a call


def row_text(row: dict[str, Any]) -> str:
    """A row as stored: ASCII JSON, so lone surrogates (non-UTF-8 file names) survive."""
    return _ROW_JSON.encode(row)


def _os_error(exc: sqlite3.Error, path: Path) -> OSError | None:
    """The operating-system error behind a failed write (disk full, file size limit), naming the store."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name == "SQLITE_FULL":
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    if name.startswith("SQLITE_IOERR"):
        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if soft != resource.RLIM_INFINITY:  # SQLite reports EFBIG as a plain write error
            return OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(path))
        return OSError(errno.EIO, f"{os.strerror(errno.EIO)} ({exc})", str(path))
    if name in ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_READONLY_DIRECTORY"):
        return OSError(errno.EROFS if "READONLY" in name else errno.EACCES, str(exc), str(path))
    return None


class ResultStore:
    """Rows keyed by ``row['key']`` in SQLite (see the module docstring). Use as a context manager to hold the lock.

    ``warnings`` collects what was found damaged (by position) or imported, for the run's summary."""

    def __init__(self, path: str | Path, lock: bool = True) -> None:
        path = Path(path)
        self.path = path / STORE_NAME if path.is_dir() else path
        self.lock = lock
        self.warnings: list[str] = []
        self.imported = 0
        self.repaired_bytes = 0  # bytes of a torn last line cut from an imported results.jsonl
        self._damaged: set[int] = set()
        self._seq: dict[str, int] = {}  # next position in the current run's order, per task
        self._skip_seq: dict[str, int] = {}
        self._diverged: dict[str, dict[str, bool]] = {}  # per task and table: written from a first difference on
        self._digest: dict[str, Any] = {}  # per task: sha256 of what the run listed
        self._changed: dict[str, bool] = {}
        self._lock_fh = None
        self._db: sqlite3.Connection | None = None

    def __enter__(self) -> ResultStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- opening -------------------------------------------------------------------------------------------------

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.lock:
            self._take_lock()
        try:
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            with self._errors():
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(_SCHEMA)
                if "item" not in {c[1] for c in self._db.execute("PRAGMA table_info(run_keys)")}:
                    self._db.execute("ALTER TABLE run_keys ADD COLUMN item TEXT")  # a store from before items
            self._import_legacy()
        except BaseException:
            self.close()
            raise

    def _take_lock(self) -> None:
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

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            mapped = _os_error(exc, self.path)
            if mapped is not None:
                raise mapped from exc
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise RecipeError(
                    f"{self.path} stayed locked by another writer for 60 s", hint="rerun when the other run is done"
                ) from exc
            raise RecipeError(
                f"the result store {self.path} is damaged: {exc}",
                hint=f"recover its rows with 'sqlite3 {self.path} .recover', or move it aside to score again",
            ) from exc

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RecipeError(f"the result store {self.path} is not open")
        return self._db

    def _import_legacy(self) -> None:
        """Import ``results.jsonl`` beside the store once (see the module docstring)."""
        legacy = self.path.with_name(LEGACY_NAME)
        if not legacy.is_file():
            return
        rows: list[tuple[str, str]] = []
        size = legacy.stat().st_size
        good_end = 0
        with legacy.open("rb") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.endswith(b"\n"):
                    break  # a torn last line: what a kill inside write() leaves
                good_end += len(line)
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict) or not isinstance(row.get("key"), str):
                        raise ValueError("not a row with a key")
                except (ValueError, UnicodeDecodeError) as exc:
                    self.warnings.append(
                        f"{legacy} line {number} is damaged ({exc}): skipped, its clip is scored again"
                    )
                    continue
                rows.append((row["key"], row_text(row)))
        self.repaired_bytes = size - good_end
        if self.repaired_bytes:
            self.warnings.append(f"{legacy}: cut a torn last line of {self.repaired_bytes} bytes")
        with self._errors():
            self.db.execute("BEGIN IMMEDIATE")
            try:
                before = self.db.total_changes
                self.db.executemany("INSERT OR IGNORE INTO results (key, row) VALUES (?, ?)", rows)
                self.imported = self.db.total_changes - before
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        os.replace(legacy, legacy.with_name(LEGACY_NAME + ".imported"))  # a kill before this re-imports: no harm
        self.warnings.append(f"imported {self.imported} rows from {legacy} into {self.path}")

    # -- reading -------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._errors():
            return self.db.execute("SELECT count(*) FROM results").fetchone()[0]

    def __contains__(self, key: str) -> bool:
        return not self.missing([key])

    def missing(self, keys: Iterable[str]) -> set[str]:
        """The keys without a good row (absent, or stored damaged)."""
        keys = list(dict.fromkeys(keys))
        found: set[str] = set()
        with self._errors():
            for i in range(0, len(keys), _CHUNK):
                chunk = keys[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                cur = self.db.execute(f"SELECT key FROM results WHERE key IN ({marks}) AND json_valid(row)", chunk)  # noqa: S608 - only placeholders are formatted in
                found.update(k for (k,) in cur)
        return set(keys) - found

    def _decode(self, pos: int, key: str, text: str) -> dict[str, Any] | None:
        try:
            row = json.loads(text)
            if not isinstance(row, dict) or row.get("key") != key:
                raise ValueError("not the row of its key")
            return row
        except ValueError as exc:
            if pos not in self._damaged:
                self._damaged.add(pos)
                self.warnings.append(f"{self.path} row {pos} is damaged ({exc}): skipped, its clip is scored again")
            return None

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """key -> row for the keys that have a good row."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, dict[str, Any]] = {}
        with self._errors():
            for i in range(0, len(keys), _CHUNK):
                chunk = keys[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for pos, key, text in self.db.execute(
                    f"SELECT pos, key, row FROM results WHERE key IN ({marks})", chunk
                ):
                    row = self._decode(pos, key, text)
                    if row is not None:
                        out[key] = row
        return out

    def get(self, key: str) -> dict[str, Any] | None:
        return self.get_many([key]).get(key)

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        """Every good row in insertion order, streamed (damaged ones are reported in ``warnings`` and skipped)."""
        with self._errors():
            last = 0
            while True:
                batch = self.db.execute(
                    "SELECT pos, key, row FROM results WHERE pos > ? ORDER BY pos LIMIT 10000", (last,)
                ).fetchall()
                if not batch:
                    return
                for pos, key, text in batch:
                    row = self._decode(pos, key, text)
                    if row is not None:
                        yield row
                last = batch[-1][0]

    def rows(self) -> list[dict[str, Any]]:
        return list(self.iter_rows())

    # -- the current run -------------------------------------------------------------------------------------------

    def _transaction(self, statements: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        with self._errors():
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self.db.executemany(sql, params)
                self.db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
                raise

    def start_run(self, task: str) -> None:
        """Begin a new run of ``task``: it lists its clips with :meth:`add_to_run` and its skips with
        :meth:`add_skips`, and :meth:`finish_run` ends it. The previous run's order is overwritten only from the first
        position where the new run differs (a rerun over the same inputs writes nothing), so until the run finishes
        the positions past the ones listed may still hold the previous run's."""
        self._seq[task] = self._skip_seq[task] = 0
        # Before the order changes: a run killed from here on leaves no stamp claiming the last run's plan.
        self.set_run_stamp(task, None)
        self._diverged[task] = {"run_keys": False, "run_skips": False}
        self._digest[task] = hashlib.sha256()
        self._changed[task] = False

    def _first_difference(self, table: str, task: str, start: int, entries: list[tuple[Any, ...]]) -> int:
        """How many of ``entries`` ((seq, value...) in order) positions ``start``.. of ``table`` already hold (0 past a
        divergence: nothing of the previous run is left there)."""
        if self._diverged[task][table]:
            return 0
        columns = "seq, key, item" if table == "run_keys" else "seq, skip"
        with self._errors():
            stored = self.db.execute(
                f"SELECT {columns} FROM {table} WHERE task = ? AND seq >= ? AND seq < ? ORDER BY seq",  # noqa: S608 - fixed names only
                (task, start, start + len(entries)),
            ).fetchall()
        return next((i for i, (old, new) in enumerate(zip(stored, entries)) if old != new), len(stored))

    def _sync(self, table: str, task: str, start: int, entries: list[tuple[Any, ...]], same: int | None = None) -> None:
        """Make positions ``start``.. of ``table`` hold ``entries``: written only from the first difference with what
        is stored there (``same``, when the caller compared them), and everything stored after it goes (it was the
        previous run's)."""
        first = self._first_difference(table, task, start, entries) if same is None else same
        if first == len(entries):
            return  # all there already (the previous run's tail, if any, is dropped by finish_run)
        statements: list[tuple[str, list[tuple[Any, ...]]]] = []
        if not self._diverged[task][table]:
            statements.append((f"DELETE FROM {table} WHERE task = ? AND seq >= ?", [(task, start + first)]))  # noqa: S608
            self._diverged[task][table] = True
            self._changed[task] = True
        if entries[first:]:
            columns = "task, seq, key, item" if table == "run_keys" else "task, seq, skip"
            marks = ", ".join("?" * (len(entries[0]) + 1))
            rows = [(task, *e) for e in entries[first:]]
            statements.append((f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows))  # noqa: S608
        self._transaction(statements)

    @staticmethod
    def _fresh(
        keys: list[str], items: list[str | None], start: int, earlier: set[str]
    ) -> tuple[list[bool], list[tuple[int, str, str | None]]]:
        """For each key whether it is new (not in ``earlier``, not listed before it), and the entries of the new."""
        seen = set(earlier)
        fresh: list[bool] = []
        entries: list[tuple[int, str, str | None]] = []
        for key, item in zip(keys, items):
            new = key not in seen
            fresh.append(new)
            if new:
                seen.add(key)
                entries.append((start + len(entries), key, item))
        return fresh, entries

    def add_to_run(self, task: str, keys: list[str], items: list[str | None] | None = None) -> list[bool]:
        """Append ``keys`` to the run's order, with the input row each was listed with (``items``: ASCII JSON, as
        :func:`row_text` writes it; the exports show it in place of the row's first input: the name and labels as
        this run gives them). Returns, for each key, whether it is new in this run (False: the same clip was listed
        earlier, in this call or a previous one). Held in SQLite, so a run of any length keeps no key set.

        A rerun listing what the last run listed asks nothing more than the comparison: when the positions already
        hold these keys, none of them can be listed earlier (a key has one position in the order)."""
        start = self._seq.get(task, 0)
        items = items if items is not None else [None] * len(keys)
        fresh, entries = self._fresh(keys, items, start, set())
        same = self._first_difference("run_keys", task, start, entries)
        if same < len(entries) or self._diverged[task]["run_keys"]:
            earlier: set[str] = set()
            unique = list(dict.fromkeys(keys))
            with self._errors():
                for i in range(0, len(unique), _CHUNK):
                    chunk = unique[i : i + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    # ``+seq``: looked up by key (its index), not by a range of positions that grows with the run
                    sql = f"SELECT key FROM run_keys WHERE task = ? AND key IN ({marks}) AND +seq < ?"  # noqa: S608 - placeholders only
                    earlier.update(k for (k,) in self.db.execute(sql, [task, *chunk, start]))
            if earlier:
                fresh, entries = self._fresh(keys, items, start, earlier)
                same = self._first_difference("run_keys", task, start, entries)
            self._sync("run_keys", task, start, entries, same)
        digest = self._digest[task]
        for _, key, item in entries:
            digest.update(f"{key}\t{item}\n".encode())
        self._seq[task] = start + len(entries)
        return fresh

    def missing_in_run(self, task: str, start: int = 0) -> set[str]:
        """The run's keys from position ``start`` to the last one listed without a good row: one join in SQL,
        whatever the store holds."""
        with self._errors():
            cur = self.db.execute(
                "SELECT o.key FROM run_keys o LEFT JOIN results r ON r.key = o.key "
                "WHERE o.task = ? AND o.seq >= ? AND o.seq < ? AND (r.key IS NULL OR NOT json_valid(r.row))",
                (task, start, self._seq.get(task, 0)),
            )
            return {k for (k,) in cur}

    def run_position(self, task: str) -> int:
        """How many clips the current run of ``task`` has listed so far."""
        return self._seq.get(task, 0)

    def add_skips(self, task: str, skips: Iterable[dict[str, Any]]) -> None:
        start = seq = self._skip_seq.get(task, 0)
        entries = []
        for skip in skips:
            entries.append((seq, row_text(skip)))
            seq += 1
        self._sync("run_skips", task, start, entries)
        digest = self._digest[task]
        for _, text in entries:
            digest.update(f"skip\t{text}\n".encode())
        self._skip_seq[task] = seq

    def finish_run(self, task: str) -> str:
        """End the run of ``task``: the previous run's positions past this one's are dropped. Returns the run's
        digest (its clips in order, the input row of each, its skips): two runs with the same digest export the same
        rows, as long as no row was scored or found damaged in between."""
        for table, end in (("run_keys", self._seq[task]), ("run_skips", self._skip_seq[task])):
            if not self._diverged[task][table]:
                with self._errors():
                    dropped = self.db.execute(
                        f"DELETE FROM {table} WHERE task = ? AND seq >= ?",  # noqa: S608 - fixed names only
                        (task, end),
                    ).rowcount
                self._changed[task] |= dropped > 0
        return self._digest[task].hexdigest()

    def run_changed(self, task: str) -> bool:
        """Whether the run of ``task`` listed anything other than the previous run did (order, input rows, skips)."""
        return self._changed.get(task, True)

    def iter_run_rows(self, task: str, batch: int = 5000) -> Iterator[dict[str, Any]]:
        """The good rows of the latest run of ``task``, in its input order, streamed ``batch`` rows a query, each
        with the input row and name this run listed it with."""
        last = -1
        while True:
            with self._errors():
                found = self.db.execute(
                    "SELECT o.seq, r.pos, r.key, r.row, o.item FROM run_keys o JOIN results r ON r.key = o.key "
                    "WHERE o.task = ? AND o.seq > ? ORDER BY o.seq LIMIT ?",
                    (task, last, batch),
                ).fetchall()
            if not found:
                return
            for _, pos, key, text, item in found:
                row = self._decode(pos, key, text)
                if row is not None:
                    if item is not None:
                        row["item"] = json.loads(item)
                        row["video"] = row["item"].get("video_url", row.get("video"))
                    yield row
            last = found[-1][0]

    def iter_run_skips(self, task: str, batch: int = 5000) -> Iterator[dict[str, Any]]:
        """The skips of the latest run of ``task``, in the order they were found."""
        last = -1
        while True:
            with self._errors():
                found = self.db.execute(
                    "SELECT seq, skip FROM run_skips WHERE task = ? AND seq > ? ORDER BY seq LIMIT ?",
                    (task, last, batch),
                ).fetchall()
            if not found:
                return
            for _, text in found:
                yield json.loads(text)
            last = found[-1][0]

    def run_counts(self, task: str) -> tuple[int, int]:
        """(clips of the latest run of ``task`` with a stored row, its skips)."""
        with self._errors():
            (rows,) = self.db.execute(
                "SELECT count(*) FROM run_keys o JOIN results r ON r.key = o.key WHERE o.task = ?", (task,)
            ).fetchone()
            (skips,) = self.db.execute("SELECT count(*) FROM run_skips WHERE task = ?", (task,)).fetchone()
        return rows, skips

    def run_item_keys(self, task: str, names: Iterable[str]) -> set[str]:
        """Which of ``names`` any input row of the latest run of ``task`` has (scanned in SQL, rows never decoded in
        Python): the optional columns of an export, known before its first line."""
        names = list(names)
        marks = ",".join("?" * len(names))
        with self._errors():
            cur = self.db.execute(
                "SELECT DISTINCT j.key FROM run_keys o JOIN results r ON r.key = o.key, json_each(CASE WHEN o.item "  # noqa: S608 - placeholders only
                "IS NOT NULL THEN o.item WHEN json_valid(r.row) THEN json_extract(r.row, '$.item') END) j "
                f"WHERE o.task = ? AND j.key IN ({marks})",
                [task, *names],
            )
            return {k for (k,) in cur}

    def run_columns(self, task: str, label_key: str) -> dict[str, list[Any]] | None:
        """The columns the checks and metrics read (score, expected_score, parse_error, and the label ``label_key``
        of each clip's input row) of the latest run of ``task``, in input order, extracted in SQL: a million rows in
        about a second, none decoded in Python. None when a label name cannot be written as a JSON path (the caller
        streams the rows instead)."""
        if '"' in label_key or "\\" in label_key:
            return None
        names = ("score", "expected_score", "parse_error", "label")
        out: dict[str, list[Any]] = {n: [] for n in names}
        with self._errors():
            cur = self.db.execute(
                "SELECT json_extract(r.row, '$.score'), json_extract(r.row, '$.expected_score'), "
                "json_extract(r.row, '$.parse_error'), json_extract(CASE WHEN o.item IS NOT NULL THEN o.item "
                "ELSE json_extract(r.row, '$.item') END, ?) FROM run_keys o JOIN results r ON r.key = o.key "
                "WHERE o.task = ? AND json_valid(r.row) ORDER BY o.seq",
                (f'$."{label_key}"', task),
            )
            while batch := cur.fetchmany(50_000):
                for name, values in zip(names, zip(*batch)):
                    out[name] += values
        return out

    # The stamps: what the exports of a name were last written from (recipe_lib.inference.kept), and what the last
    # finished run of a task was planned from (recipe_lib.inference.kept_run); JSON objects, by table and key.
    _STAMPS = {"exports": "name", "run_stamps": "task"}

    def _stamp(self, table: str, key: str) -> dict[str, Any] | None:
        with self._errors():
            found = self.db.execute(f"SELECT stamp FROM {table} WHERE {self._STAMPS[table]} = ?", (key,)).fetchone()
        try:
            stamp = json.loads(found[0]) if found else None
        except ValueError:
            return None  # a damaged stamp only means the work is done again
        return stamp if isinstance(stamp, dict) else None

    def _set_stamp(self, table: str, key: str, stamp: dict[str, Any] | None) -> None:
        column = self._STAMPS[table]
        if stamp is None:
            self._transaction([(f"DELETE FROM {table} WHERE {column} = ?", [(key,)])])
        else:
            text = json.dumps(stamp, sort_keys=True, ensure_ascii=True)
            self._transaction([(f"INSERT OR REPLACE INTO {table} ({column}, stamp) VALUES (?, ?)", [(key, text)])])

    def export_stamp(self, name: str) -> dict[str, Any] | None:
        """What the exports ``name`` were last written from (see :mod:`recipe_lib.inference.kept`), or None."""
        return self._stamp("exports", name)

    def set_export_stamp(self, name: str, stamp: dict[str, Any] | None) -> None:
        """Record (or, with None, forget) what the exports ``name`` were written from."""
        self._set_stamp("exports", name, stamp)

    def run_stamp(self, task: str) -> dict[str, Any] | None:
        """What the last finished run of ``task`` was planned from (:mod:`recipe_lib.inference.kept_run`), or None."""
        return self._stamp("run_stamps", task)

    def set_run_stamp(self, task: str, stamp: dict[str, Any] | None) -> None:
        """Record (or, with None, forget) what the run of ``task`` just finished was planned from."""
        self._set_stamp("run_stamps", task, stamp)

    # -- writing -------------------------------------------------------------------------------------------------

    def append(self, rows: Iterable[dict[str, Any]]) -> int:
        """Store new rows (keys not stored yet, or stored damaged) in one transaction; returns how many were
        written. A key already stored whole is never written twice."""
        items = [(r["key"], row_text(r)) for r in rows]
        if not items:
            return 0
        with self._errors():
            self.db.execute("BEGIN IMMEDIATE")
            try:
                before = self.db.total_changes
                self.db.executemany(
                    "INSERT INTO results (key, row) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET row = excluded.row WHERE NOT json_valid(results.row)",
                    items,
                )
                written = self.db.total_changes - before
                self.db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
                raise
        return written


Signature = tuple[int, int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns


def signature(st: os.stat_result) -> Signature:
    """What says a file is the one hashed before: a change of any of these reads it again."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class FileDigests:
    """The ``file_digests`` table of a store, on a connection of its own (planning runs on a thread ahead of the
    scoring, and takes no run lock: a digest is true whoever writes it). A cache only: if the database cannot be
    opened or read (damaged, read-only), lookups find nothing and writes are dropped, and the files are read as if
    never hashed; the store itself reports the problem when the run opens it."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path / STORE_NAME if path.is_dir() else path
        self._db: sqlite3.Connection | None = None
        self.failed = False

    def _connect(self) -> sqlite3.Connection | None:
        if self._db is None and not self.failed:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.executescript(_SCHEMA)
            except (sqlite3.Error, OSError):
                self.close()
                self.failed = True
        return self._db

    def lookup(self, paths: Sequence[str]) -> dict[str, tuple[Signature, str]]:
        """path -> (signature, sha256) for the paths a digest is kept for."""
        db = self._connect()
        found: dict[str, tuple[Signature, str]] = {}
        if db is None:
            return found
        unique = list(dict.fromkeys(paths))
        try:
            for i in range(0, len(unique), _CHUNK):
                chunk = unique[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                sql = (
                    f"SELECT path, dev, ino, size, mtime_ns, ctime_ns, sha256 FROM file_digests WHERE path IN ({marks})"  # noqa: S608 - placeholders only
                )
                for path, *sig, digest in db.execute(sql, chunk):
                    found[path] = (tuple(sig), digest)  # type: ignore[assignment]
        except sqlite3.Error:
            self.close()
            self.failed = True
            return {}
        return found

    def remember(self, entries: Iterable[tuple[str, Signature, str]]) -> None:
        """Keep (path, signature, sha256) for the next run, in one transaction."""
        params = [(path, *sig, digest) for path, sig, digest in entries]
        db = self._connect() if params else None
        if db is None:
            return
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT OR REPLACE INTO file_digests VALUES (?, ?, ?, ?, ?, ?, ?)", params)
            db.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            self.close()
            self.failed = True

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None


class RunView(Sequence[dict[str, Any]]):
    """The rows (``what="rows"``) or skips (``"skips"``) of the latest run of ``task`` in a store, read on demand:
    iterating streams them from SQLite (a read-only connection, no run lock), ``len`` is one count, a slice reads
    just the rows it names from the start. What :class:`~recipe_lib.inference.score_config.ScoreResult` holds for a
    run too large to keep in lists; a later run of the same task into the same folder changes what it reads."""

    def __init__(self, path: str | Path, task: str, what: str, length: int) -> None:
        self.path = Path(path)
        self.task = task
        self.what = what
        self._length = length

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with ResultStore(self.path, lock=False) as store:
            rows = store.iter_run_rows(self.task) if self.what == "rows" else store.iter_run_skips(self.task)
            yield from rows

    def columns(self, label_key: str) -> dict[str, list[Any]] | None:
        """:meth:`ResultStore.run_columns` of this run (rows only)."""
        with ResultStore(self.path, lock=False) as store:
            return store.run_columns(self.task, label_key) if self.what == "rows" else None

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._length)
            return list(itertools.islice(iter(self), start, stop, step))
        position = range(self._length)[index]  # IndexError past the end, negative positions from the end
        return next(itertools.islice(iter(self), position, None))

    def __repr__(self) -> str:
        return f"RunView({str(self.path)!r}, task={self.task!r}, {self.what}: {self._length})"


def read_store(path: str | Path) -> list[dict[str, Any]]:
    """Every good row of a result store (a store file or an output folder), without taking the run lock."""
    with ResultStore(path, lock=False) as store:
        return store.rows()


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Complete rows of a JSONL file (a partial last line is ignored)."""
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            if line.endswith("\n"):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    return
