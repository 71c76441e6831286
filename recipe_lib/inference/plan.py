"""What a scoring run has to do, worked out on the driver before any model is loaded: the settings resolved (flags,
then the caller's, then the critic's), the inputs listed and checked, URLs fetched, every clip keyed by its content and
the settings (:class:`ScorePlan`), and the stored row of a scored clip (:func:`scored_row`). Both engines, local and
Ray, start from the same plan."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recipe_lib.config import ScoringProtocol, to_dict, with_fields
from recipe_lib.data.download import is_remote
from recipe_lib.data.tables import is_dataset_dir, is_table, iter_rows
from recipe_lib.errors import DataError, RecipeError
from recipe_lib.inference.record import ScoredClip
from recipe_lib.inference.score_config import ScoreConfig
from recipe_lib.inference.store import STORE_NAME, FileDigests, Signature, result_key, row_text, signature
from recipe_lib.io import printable, redact_url, remember_url, utf8_name
from recipe_lib.prompts import load_prompt
from recipe_lib.video import file_digest, find_videos, special_file


def resolve_items(inputs: list[str], split: str | None = None, label_column: str = "pc") -> list[dict[str, Any]]:
    """Turn files, folders, globs, dataset folders and tables into item dicts with a ``video_url``."""
    return resolve_inputs(inputs, split, label_column)[0]


def check_label(value: Any, where: str, label_column: str) -> None:
    """A table's label must be empty (unlabelled) or a whole score 1-5; anything else names the row and clip."""
    if value is None or (isinstance(value, float) and value != value):
        return
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number != int(number) or not 1 <= number <= 5:
        raise DataError(
            f"{where}: label {label_column}={value!r} is not a whole score 1-5",
            hint="fix or clear that label (scale binary labels with 'plausibility prepare custom --scale-labels'), "
            "or name another column with --label-column",
        )


def check_table_rows(path: Path, split: str | None, label_column: str) -> None:
    """Before any row of a table is scored: every row names a clip and its label is empty or a whole score 1-5 (the
    checks :func:`_table_item` makes per row), read a few columns at a time (:func:`~recipe_lib.data.tables.
    iter_columns`), so a bad row near the end of a table of millions is an error before the first clip, not after
    hours of scoring. The rows a quick test flags are checked one by one, with the same messages."""
    import numpy as np
    import pandas as pd

    from recipe_lib.data.tables import iter_columns

    offset = 0
    for frame in iter_columns(path, ["video_url", label_column], split):
        if "video_url" not in frame:
            return  # reading the rows says so
        urls = frame["video_url"]
        empty = np.flatnonzero((urls.isna() | (urls == "") | (urls == 0)).to_numpy())
        if len(empty):
            raise DataError(f"{path}: row {offset + empty[0]} has no 'video_url'", hint="every row needs a video path")
        if label_column in frame and label_column != "video_url":
            values = frame[label_column]
            number = pd.to_numeric(values, errors="coerce")
            good = values.isna() | ((number % 1 == 0) & (number >= 1) & (number <= 5))
            for i in np.flatnonzero(~good.to_numpy()):
                where = f"{path} row {offset + i} ({os.path.basename(str(urls.iloc[i]))})"
                value = values.iloc[i]
                value = value.item() if isinstance(value, np.generic) else value  # shown as the row reader gives it
                check_label(value, where, label_column)  # raises unless the quick test was too strict
        offset += len(frame)


def _remote(url: str) -> bool:
    """:func:`~recipe_lib.data.download.is_remote`, with absolute paths (most rows of a large table) answered without
    parsing: a scheme never starts with ``/``."""
    return not url.startswith("/") and is_remote(url)


def _table_item(row: dict[str, Any], i: int, path: Path, base: Path, label_column: str) -> dict[str, Any]:
    """One table row as an item: its ``video_url`` checked (a URL listed redacted, a relative path resolved from the
    table's folder) and its label checked."""
    url = row.get("video_url")
    if not url:
        raise DataError(f"{path}: row {i} has no 'video_url'", hint="every row needs a video path")
    url = str(url)
    label = row.get(label_column)
    if label is not None and not (type(label) is int and 1 <= label <= 5):  # the common case, checked fast
        check_label(label, f"{path} row {i} ({os.path.basename(url)})", label_column)
    if url.startswith("/"):
        pass  # an absolute path: most rows of a large table, answered with no parsing
    elif is_remote(url):
        url = remember_url(url)  # credentials never reach a row, a skip or a report
    else:
        url = table_video_path(url, base)
    row["video_url"] = url
    return row


def table_video_path(url: str, base: Path) -> str:
    """A table row's local ``video_url`` as the file it names: a relative path is read from the table's folder
    ``base``. (The rule a rerun's check of its inputs follows too: :mod:`recipe_lib.inference.kept_run`.)"""
    return url if os.path.isabs(url) else os.path.join(base, url)


def iter_inputs(
    inputs: list[str],
    split: str | None = None,
    label_column: str = "pc",
    require_label_column: bool = False,
    chunk_rows: int = 10_000,
    repeated: list[str] | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Items as :func:`resolve_items` gives them, in chunks of at most ``chunk_rows``: tables are streamed
    (:func:`recipe_lib.data.tables.iter_rows`), so a table of millions of rows is never held whole. File paths given
    more than once (a folder and a glob over it, or one file twice) are appended to ``repeated``: those are scored
    once and counted, not listed as skips, because the clip is scored."""
    if not inputs:
        raise RecipeError("no videos given", hint="pass video files, a folder, a glob, a dataset folder or a table")
    pending: list[dict[str, Any]] = []
    loose: list[str] = []
    given = 0
    for raw in inputs:
        path = Path(raw)
        if is_remote(raw):
            pending.append({"video_url": remember_url(str(raw))})  # a clip given by URL (fetched when scoring)
            given += 1
        elif is_dataset_dir(path) or is_table(path):
            check_table_rows(path, split, label_column)
            i = -1
            base = path.parent if path.is_file() else path
            for rows in iter_rows(path, split=split, chunk_rows=chunk_rows):
                if i < 0 and require_label_column and rows and label_column not in rows[0]:
                    raise DataError(
                        f"{path} has no column '{label_column}' (named by --label-column)",
                        hint=f"its columns: {', '.join(map(str, rows[0]))}",
                    )
                for row in rows:
                    i += 1
                    pending.append(_table_item(row, i, path, base, label_column))
                given += len(rows)
                while len(pending) >= chunk_rows:
                    yield pending[:chunk_rows]
                    del pending[:chunk_rows]
            if i < 0:
                raise DataError(f"{path} has no rows", hint="a table of clips needs one row per clip with a video_url")
        else:
            loose.append(raw)
    if split is not None and loose and len(loose) == len(inputs):
        raise DataError(
            f"--split {split} names a split, but the inputs are video files, not a dataset folder",
            hint="drop --split (it selects a split of a dataset folder that holds several)",
        )
    seen: set[str] = set()
    for raw in loose:
        for p in find_videos([raw]):
            real = os.path.realpath(p)
            if real in seen:
                if repeated is not None:
                    repeated.append(str(p))
                continue
            seen.add(real)
            pending.append({"video_url": str(p)})
            given += 1
            if len(pending) >= chunk_rows:
                yield pending
                pending = []
    if not given:
        raise RecipeError(f"no videos found in {', '.join(inputs)}")
    if pending:
        yield pending


def resolve_inputs(
    inputs: list[str], split: str | None = None, label_column: str = "pc", require_label_column: bool = False
) -> tuple[list[dict[str, Any]], list[str]]:
    """Items as :func:`resolve_items` gives them (all in one list: for inputs of a size evaluation reads whole;
    scoring streams them with :func:`iter_inputs`), and the file paths given more than once."""
    repeated: list[str] = []
    items = [it for chunk in iter_inputs(inputs, split, label_column, require_label_column, repeated=repeated)
             for it in chunk]  # fmt: skip
    return items, repeated


def model_fingerprint(model: str) -> str:
    """Identity of a model for cache keys: a hub id as is; a local folder by path plus its weights' size and mtime,
    so retraining into the same folder scores again."""
    path = Path(model)
    try:
        if not path.is_dir():
            return model
    except OSError:  # a symlink loop, a name too long: load_critic names the problem
        return model
    stats = sorted((f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in path.glob("*.safetensors"))
    return f"{path.resolve()}::{result_key(stats=stats)}"


def backend_identity(cfg: ScoreConfig) -> dict[str, Any]:
    """What, besides the critic's name, says which weights answer: the backend, and for a served endpoint its address
    (credentials removed: they say who asks, not who answers) and the model name it serves. Rows of the in-process
    transformers backend keep the key they always had, so existing stores stay valid."""
    if cfg.backend == "hf":
        return {}
    identity: dict[str, Any] = {"backend": cfg.backend}
    if cfg.backend == "openai":
        identity["endpoint"] = redact_url(str(cfg.endpoint.base_url or "")).rstrip("/")
        identity["served_model"] = cfg.endpoint.served_model or str(cfg.model)
    return identity


# The store's lock and SQLite's -wal/-shm files are not claimed: they hold no exported data, and another run holding
# the lock is reported by the store.
SCORE_FILES = (STORE_NAME, "scores.csv", "skipped.jsonl", "summary.json")


def score_files(task: str = "pc") -> tuple[str, ...]:
    """The files one task's scoring writes: one store for every task, ``scores.csv`` (pc) or ``scores_<task>.csv``."""
    from recipe_lib.tasks import task_file

    return (STORE_NAME, *(task_file(name, task) for name in SCORE_FILES[1:]))


def _resolved_dtype(cfg: ScoreConfig) -> str:
    from recipe_lib.models.loading import resolve_device, resolve_dtype

    if cfg.backend != "hf":
        return resolve_dtype(cfg.dtype, "cuda")
    # "cpu" needs no torch to resolve: a rerun served from the store on CPU never imports it (seconds saved).
    device = "cpu" if cfg.device.strip().lower() == "cpu" else resolve_device(cfg.device)
    return resolve_dtype(cfg.dtype, device)


def resolve_settings(cfg: ScoreConfig) -> tuple[ScoreConfig, ScoringProtocol]:
    """``cfg`` with concrete video and sampling settings, and the record of where each field came from (see the
    module docstring). Flags win, then settings the caller gave, then the critic's."""
    from recipe_lib.profiles import critic_settings

    critic = critic_settings(cfg.model)

    def pick(given: Any, source: str, default: Any, overrides: dict[str, Any], where: str) -> tuple[Any, dict]:
        base, base_from = (given, source) if given is not None else (default, "critic")
        chosen = with_fields(base, overrides, where)
        fields = [f.name for f in dataclasses.fields(chosen)]
        return chosen, {f: ("flag" if overrides.get(f) is not None else base_from) for f in fields}

    video, video_from = pick(cfg.video, cfg.video_source, critic.video, cfg.video_overrides, "video settings")
    sampling, sampling_from = pick(
        cfg.sampling, cfg.sampling_source, critic.sampling, cfg.sampling_overrides, "sampling settings"
    )
    protocol = ScoringProtocol(
        video, sampling, video_from, sampling_from, critic.kind, critic.reason, sampling_used=cfg.mode == "generate"
    )
    resolved = dataclasses.replace(cfg, video=video, sampling=sampling, video_source=protocol.video_source)
    resolved.sampling_source = protocol.sampling_source
    return resolved, protocol


SETTLED_NS = 2_000_000_000  # a file changed this recently is hashed, not remembered: a write in the same clock tick
# after the hash would keep its size and times, so its digest is kept only once the file has been left alone this long


class DigestCache:
    """sha256 of each file's bytes, read once: within a run by stat signature (device, inode, size, mtime, ctime), so
    a table that lists a few clips under millions of names hashes each clip once; across runs through ``saved`` (the
    store's ``file_digests``, by path and signature), so a rerun only stats its files. A file whose signature changed
    (rewritten, touched, replaced) is read again. At most ``limit`` signatures are held in memory (a table of
    millions of distinct clips does not grow it without bound).

    :meth:`prefetch` looks up a chunk's files in ``saved`` in one pass, :meth:`of` gives each digest (reading the file
    when no kept digest matches), :meth:`flush` keeps the digests read since the last flush. ``hashed`` counts the
    files read."""

    def __init__(self, saved: FileDigests | None = None, limit: int = 20_000) -> None:
        self._known: dict[Signature, str] = {}
        self._kept: dict[str, tuple[Signature, str]] = {}
        self._new: list[tuple[str, Signature, str]] = []
        self.saved = saved
        self.limit = limit
        self.hashed = 0

    def prefetch(self, paths: list[str]) -> None:
        """Look the digests of ``paths`` up in ``saved`` (one query per 900 paths instead of one per file)."""
        self._kept = self.saved.lookup([absolute(p) for p in paths]) if self.saved is not None else {}

    def of(self, path: str, st: os.stat_result | None = None) -> str:
        st = st or os.stat(path)
        sig = signature(st)
        digest = self._known.get(sig)
        if digest is None:
            where = absolute(path)
            kept = self._kept.get(where)
            if kept is not None and kept[0] == sig:
                digest = kept[1]
            else:
                digest = file_digest(path)
                self.hashed += 1
                if self.saved is not None and time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > SETTLED_NS:
                    self._new.append((where, sig, digest))
            if len(self._known) >= self.limit:
                self._known.clear()
            self._known[sig] = digest
        return digest

    def flush(self) -> None:
        if self.saved is not None and self._new:
            self.saved.remember(self._new)
        self._new = []
        self._kept = {}

    def close(self) -> None:
        self.flush()
        if self.saved is not None:
            self.saved.close()


@dataclasses.dataclass
class ScorePlan:
    """What a run has to do for one chunk of its inputs (or all of them, :func:`plan_scoring`), worked out on the
    driver before the chunk is scored: its clips with their cache keys (``keyed``: key -> item, in input order), the
    local file of each (``local``: URLs fetched into the cache), and the skips found on the way. A key may repeat an
    earlier chunk's: the store's run order (:meth:`ResultStore.add_to_run`) finds those duplicates."""

    prompt: Any
    items: list[dict[str, Any]]
    repeated: list[str]
    keyed: list[tuple[str, dict[str, Any]]]
    local: dict[str, str]
    skipped: list[dict[str, Any]]


def _local_files(cfg: ScoreConfig, items: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> dict[str, str]:
    """video_url -> local file for every item (URLs fetched through the download cache, in parallel)."""
    from recipe_lib.data.download import DownloadConfig
    from recipe_lib.inference.fetch import FetchFailure, default_cache_dir, fetch

    local: dict[str, str] = {}
    urls: dict[str, None] = {}
    for it in items:
        url = it["video_url"]
        if _remote(url):
            urls[url] = None
        else:
            local[url] = url
    if urls:
        cache = Path(cfg.download_cache or default_cache_dir())
        how = DownloadConfig(cache_dir=cache, progress=False, deadline=cfg.download_deadline)
        with cf.ThreadPoolExecutor(max_workers=max(1, min(8, cfg.workers))) as pool:
            futures = {u: pool.submit(fetch, u, cache, how) for u in urls}
            for url, fut in futures.items():
                try:
                    local[url] = str(fut.result())
                except FetchFailure as exc:
                    skipped.append({"video": url, "reason": exc.reason})
    return local


@dataclasses.dataclass
class PlanSetup:
    """What every chunk of a run shares: the task, the prompt and the settings every key hashes."""

    task: str
    prompt: Any
    settings: dict[str, Any]


def plan_setup(cfg: ScoreConfig) -> PlanSetup:
    """The checks made before any input is read, and the settings of the cache keys."""
    from recipe_lib import tasks

    if cfg.batch_size < 1:
        raise RecipeError(f"batch_size must be at least 1, got {cfg.batch_size}")
    parsed = tasks.parse_tasks(cfg.task)
    if len(parsed) != 1:
        raise RecipeError(f"score_videos scores one task at a time, got {cfg.task!r}", hint="call it once per task")
    task = parsed[0]
    prompt = load_prompt(cfg.prompt)
    tasks.check_task_prompt(task, prompt)
    prompt.require(cfg.mode)  # the answer key the mode needs, before any clip is read or model loaded
    settings = {
        "model": model_fingerprint(cfg.model),
        "prompt": prompt.digest(),
        "mode": cfg.mode,
        "video": to_dict(cfg.video),
        "sampling": to_dict(cfg.sampling) if cfg.mode == "generate" else None,
        "caption": cfg.use_caption,
        "dtype": _resolved_dtype(cfg),  # a bfloat16 row is never served as the float32 one
    }
    settings.update(backend_identity(cfg))
    if cfg.precision != "dtype":
        settings["precision"] = cfg.precision  # an fp8 row is never served as the bfloat16 one (dtype rows keep theirs)
    return PlanSetup(task, prompt, settings)


_CONTENT = "\x00content\x00"  # stands for the digest in a key's JSON (a sha256 is hex: nothing to escape)


def key_template(settings: dict[str, Any]) -> str:
    """The JSON :func:`~recipe_lib.inference.store.result_key` hashes for a clip with no task parts, the digest left
    out: the settings are serialised once per run, not once per clip (a million distinct clips save ~15 s)."""
    return json.dumps({**settings, "content": _CONTENT}, sort_keys=True, default=str)


_CONTENT_JSON = json.dumps(_CONTENT)


def fast_key(template: str, digest: str) -> str:
    """``result_key(content=digest, **settings)`` from :func:`key_template`'s JSON: the same key, byte for byte (a
    hex digest needs no escaping: its JSON is the digest in quotes)."""
    return hashlib.sha256(template.replace(_CONTENT_JSON, f'"{digest}"', 1).encode()).hexdigest()[:32]


def absolute(path: str) -> str:
    """``os.path.abspath(path)``, answered without a call for a path that is already absolute and normal (nearly
    every row of a large table)."""
    if path.startswith("/") and "/." not in path and "//" not in path and not path.endswith("/"):
        return path
    return os.path.abspath(path)


def _unreadable(url: str, exc: OSError) -> dict[str, str]:
    """The skip of a clip whose file cannot be stat'ed or read."""
    if isinstance(exc, FileNotFoundError):
        return {"video": url, "reason": f"video not found: {url}"}
    if isinstance(exc, IsADirectoryError):
        return {"video": url, "reason": f"expected a video file, got a folder: {url}"}
    return {"video": url, "reason": f"cannot read {printable(url)}: {exc.strerror or exc}"}


def iter_plan(
    cfg: ScoreConfig, setup: PlanSetup, chunk_rows: int = 10_000, digests: DigestCache | None = None
) -> Iterator[ScorePlan]:
    """The run's inputs planned chunk by chunk (listed, URLs fetched, every clip keyed by its content and the
    settings): memory holds one chunk, however many rows the inputs have. ``cfg.limit`` stops reading once that
    many clips are listed. ``digests`` (default: one for this run only) says which files were hashed before; the
    caller closes it."""
    from recipe_lib import tasks

    digests = digests or DigestCache()
    template = key_template(setup.settings)
    keys: dict[tuple[str, str], str] = {}
    left = cfg.limit
    repeated: list[str] = []
    for items in iter_inputs(
        cfg.inputs, cfg.split, cfg.label_column, cfg.require_label_column, chunk_rows, repeated=repeated
    ):
        if left is not None:
            items = items[:left]
            left -= len(items)
        items, task_skips = tasks.prepare_items(setup.task, items, tasks.TaskColumns(caption=cfg.caption_column))
        skipped: list[dict[str, Any]] = list(task_skips)
        named: list[dict[str, Any]] = []
        for item in items:
            if utf8_name(str(item["video_url"])):
                named.append(item)
            else:
                # JSON/CSV outputs and the result store hold UTF-8 text: the clip is skipped and counted, never a crash.
                skipped.append(
                    {
                        "video": printable(item["video_url"]),
                        "reason": "file name is not valid UTF-8; rename the file (e.g. with convmv) to score it",
                    }
                )
        local = _local_files(cfg, named, skipped)
        # Every file stat'ed first, so the kept digests of the whole chunk are looked up at once; skips stay in
        # input order.
        found: list[tuple[dict[str, Any], str, os.stat_result | dict[str, str]]] = []
        for item in named:
            url = item["video_url"]
            if url not in local:
                continue  # a URL that could not be fetched: already a skip
            try:
                st: os.stat_result | dict[str, str] = os.stat(local[url])  # what the file is, and its signature
            except OSError as exc:
                st = _unreadable(url, exc)
            found.append((item, local[url], st))
        digests.prefetch([path for _, path, st in found if isinstance(st, os.stat_result)])
        keyed: list[tuple[str, dict[str, Any]]] = []
        for item, path, st in found:
            url = item["video_url"]
            if isinstance(st, dict):
                skipped.append(st)
                continue
            kind = special_file(path, st.st_mode)
            if kind is not None:
                skipped.append({"video": url, "reason": f"not a regular file ({kind}): only video files are read"})
                continue
            try:
                digest = digests.of(path, st)
            except OSError as exc:
                skipped.append(_unreadable(url, exc))
                continue
            parts = tasks.key_parts(setup.task, item)
            memo = (digest, json.dumps(parts, sort_keys=True, default=str) if parts else "")
            key = keys.get(memo)
            if key is None:  # the same clip listed many times is keyed once (the key itself is unchanged)
                if len(keys) >= digests.limit:
                    keys.clear()
                key = keys[memo] = (
                    fast_key(template, digest) if not parts else result_key(content=digest, **setup.settings, **parts)
                )
            keyed.append((key, {**item, "video_sha256": digest}))
        digests.flush()  # a killed run keeps the digests of the chunks it planned
        yield ScorePlan(setup.prompt, named, list(repeated), keyed, local, skipped)
        repeated.clear()
        if left is not None and left <= 0:
            return


def plan_scoring(cfg: ScoreConfig) -> ScorePlan:
    """The whole run planned at once (for inputs of a size that fits in lists; scoring streams :func:`iter_plan`):
    a clip with the same key as an earlier one is a skip (``duplicate``)."""
    setup = plan_setup(cfg)
    whole = ScorePlan(setup.prompt, [], [], [], {}, [])
    seen: set[str] = set()
    for chunk in iter_plan(cfg, setup):
        whole.items += chunk.items
        whole.repeated += chunk.repeated
        whole.local.update(chunk.local)
        whole.skipped += chunk.skipped
        for key, item in chunk.keyed:
            if key in seen:
                whole.skipped.append({"video": item["video_url"], "reason": DUPLICATE})
                continue
            seen.add(key)
            whole.keyed.append((key, item))
    return whole


DUPLICATE = "duplicate: same content as an earlier clip in this run"


def stored_item(item: dict[str, Any]) -> dict[str, Any]:
    """The input row as a stored row keeps it (the digest is the row's own field)."""
    return {k: v for k, v in item.items() if k != "video_sha256"}


_ITEM_JSON = json.JSONEncoder(ensure_ascii=True, default=str, allow_nan=False)


def item_text(item: dict[str, Any]) -> str:
    """:func:`stored_item` as the run's order in the store keeps it: ASCII JSON, as rows are stored, with a number
    that is not finite (which JSON cannot hold, and SQLite's JSON functions refuse) as null."""
    kept = stored_item(item)
    try:
        return _ITEM_JSON.encode(kept)
    except ValueError:
        return row_text({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in kept.items()})


def scored_row(cfg: ScoreConfig, prompt: Any, key: str, item: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """The stored row of one scored clip (identity and input row added to the scorer's part)."""
    from recipe_lib.tasks import finish_row

    row = finish_row(cfg.task, row)
    return ScoredClip(
        key=key,
        video=item["video_url"],
        video_sha256=item["video_sha256"],
        model=cfg.model,
        prompt=prompt.name,
        mode=cfg.mode,
        item=stored_item(item),
        task=cfg.task,
        **row,
    ).to_json()
