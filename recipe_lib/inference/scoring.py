"""The scoring stage: clips in, one cached row per clip out, resumable and honest about every skip.

``score_videos(ScoreConfig) -> ScoreResult`` is what ``plausibility score``, the notebooks and the evaluation code call.
Inputs are local paths or URLs (http(s), and s3:// or gs:// through fsspec), fetched into the download cache
(:mod:`recipe_lib.inference.fetch`). With ``engine="local"`` clips are decoded and sized on CPU worker threads one
batch ahead of the model; with ``engine="ray"`` on a Ray cluster (:mod:`recipe_lib.inference.ray_engine`), with the
same rows. Finished batches are committed to ``results.sqlite`` (:mod:`recipe_lib.inference.store`), so a killed run
loses at most the batch in flight and a rerun scores only what is missing. Clips that cannot be read are recorded in
``skipped.jsonl`` with the reason and counted in the summary; they are tried again on the next run (after the user
fixes them). A rerun whose local inputs and settings are unchanged since the last finished run of its task, with
nothing skipped but duplicates, takes that run's plan from the store instead of planning every row again
(:mod:`recipe_lib.inference.kept_run`).

Video and sampling settings are resolved first (:func:`resolve_settings`): explicit ones (``video_overrides`` /
``sampling_overrides``, i.e. flags) win; then settings the caller passed (``video`` / ``sampling``, labelled by
``video_source`` / ``sampling_source``); otherwise the critic's (:func:`recipe_lib.profiles.critic_settings`: the
demo critic gets the demo settings, any other critic the recipe's). What was used and where each field came from is in
``summary.json`` (``settings``) and :attr:`ScoreResult.protocol`.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import itertools
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from recipe_lib.config import to_dict
from recipe_lib.constants import IN_MEMORY_ROWS
from recipe_lib.errors import RecipeError
from recipe_lib.inference.exports import optional_columns_present, write_jsonl, write_scores_csv
from recipe_lib.inference.kept import keep_exports, kept_exports
from recipe_lib.inference.kept_run import InputState, input_state, kept_run, run_stamp
from recipe_lib.inference.plan import (
    DUPLICATE,
    DigestCache,
    ScorePlan,
    item_text,
    iter_plan,
    plan_setup,
    resolve_settings,
    score_files,
    scored_row,
)
from recipe_lib.inference.score_config import OPTIONAL_ITEM_COLUMNS, ScoreConfig, ScoreResult
from recipe_lib.inference.scorers import Scorer, make_scorer
from recipe_lib.inference.store import LEGACY_NAME, FileDigests, ResultStore, RunView, store_path
from recipe_lib.io import atomic_write_json, claim_outputs, redact_obj, writes_as
from recipe_lib.progress import progress_bar


def _write_outputs(cfg: ScoreConfig, result: ScoreResult, optional: Callable[[], set[str]]) -> None:
    """scores.csv and skipped.jsonl streamed from ``result`` (lists or views of the store), unless a rerun of the
    same run left them as written (:mod:`recipe_lib.inference.kept`), then summary.json."""
    out = Path(cfg.out_dir)
    _, scores, skipped, summary = score_files(cfg.task)
    paths = [out / scores, out / skipped]
    name = f"scores:{cfg.task}"
    # The optional columns follow from the run (its digest) and the stored rows: asked only when writing.
    basis = {"run": result.digest, "label_column": result.label_column}
    kept = kept_exports(out, name, basis, paths) if result.reusable else None
    if kept is not None:
        result.unparsed = int(kept["unparsed"])
    else:
        result.unparsed = write_scores_csv(paths[0], result.rows, result.label_column, optional())
        write_jsonl(paths[1], result.skipped)
        keep_exports(out, name, basis, paths, {"unparsed": result.unparsed})
    # Inputs and URLs are listed redacted; a reason may quote a server's text: the whole summary goes through redact.
    atomic_write_json(out / summary, redact_obj({"config": to_dict(cfg), **result.summary()}))


class _LazyScorer:
    """The scorer, built when the first clip needs the model (a run served from the store loads nothing)."""

    def __init__(self, cfg: ScoreConfig, prompt: Any, given: Scorer | None) -> None:
        self.cfg, self.prompt, self.scorer = cfg, prompt, given

    def get(self) -> Scorer:
        if self.scorer is None:
            self.scorer = make_scorer(self.cfg, self.prompt)
        return self.scorer


def _score_local(
    cfg: ScoreConfig, plan: ScorePlan, todo: list[tuple[str, dict[str, Any]]], store: ResultStore, scorer: Scorer, bar
) -> int:
    """Score ``todo`` (one chunk's missing clips) in this process; returns how many rows were stored. Each batch is
    one transaction of the store, so a kill loses at most the batch in flight."""
    from recipe_lib.errors import ClipError
    from recipe_lib.inference.requests import batches_by_visual_tokens

    n_now = 0
    # Clips of similar visual-token count share a batch (little padding); rows still come out in input order.
    batches = batches_by_visual_tokens(
        todo, [plan.local[it["video_url"]] for _, it in todo], cfg.video, cfg.batch_size, cfg.max_batch_tokens
    )
    with cf.ThreadPoolExecutor(max_workers=max(1, cfg.workers)) as pool:

        def submit(batch: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, Any]]:
            return [
                (k, pool.submit(scorer.prepare, {**it, "video_url": plan.local[it["video_url"]]})) for k, it in batch
            ]

        pending = submit(batches[0])
        for b in range(len(batches)):
            current = pending
            if b + 1 < len(batches):
                pending = submit(batches[b + 1])  # decode the next batch while the model runs
            ready, done = [], []
            for (key, fut), (_, it) in zip(current, batches[b]):
                try:
                    ready.append(fut.result())
                    done.append((key, it))
                except ClipError as exc:
                    plan.skipped.append({"video": it["video_url"], "reason": _named(str(exc), plan, it)})
            if ready:
                records = []
                for (k, it), row in zip(done, scorer.score_batch(ready)):
                    if "skip_reason" in row:  # the backend could not score this clip (e.g. a failed request)
                        plan.skipped.append({"video": it["video_url"], "reason": row["skip_reason"]})
                    else:
                        records.append(scored_row(cfg, plan.prompt, k, it, row))
                n_now += store.append(records)
            bar.update(len(batches[b]))
    return n_now


def _named(reason: str, plan: ScorePlan, item: dict[str, Any]) -> str:
    """A reason that names the clip as the user gave it (a URL, not the cache file it was read from)."""
    url = item["video_url"]
    local = plan.local.get(url, url)
    return reason.replace(local, url) if local != url else reason


def ahead(chunks: Iterator[ScorePlan]) -> Iterator[ScorePlan]:
    """``chunks`` planned on a thread one chunk ahead of the caller: the next chunk's rows are read, its URLs fetched
    and its clips hashed while the current one is scored (a slow URL holds up its own chunk, not the clips before
    it). An error while planning is raised here, where the chunk would have come."""
    box: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        box.put(("chunk", chunk), timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put(("end", None))
        except BaseException as exc:  # handed to the consumer, which raises it
            box.put(("error", exc))

    thread = threading.Thread(target=produce, name="plan-ahead", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = box.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting to put, then let it see ``stop``
            try:
                box.get(timeout=0.2)
            except queue.Empty:
                continue


def _run_rows(store: ResultStore, task: str, n_rows: int, n_skips: int) -> tuple[Any, Any, Callable[[], set[str]]]:
    """The rows and skips of the run of ``task`` just listed: lists for a run of up to ``IN_MEMORY_ROWS``, else
    views of the store; and the optional columns of scores.csv (from the lists, or one scan in SQL when written)."""
    if n_rows + n_skips <= IN_MEMORY_ROWS:
        rows = list(store.iter_run_rows(task))
        present = optional_columns_present(rows)
        return rows, list(store.iter_run_skips(task)), lambda: present

    def optional() -> set[str]:
        with ResultStore(store.path, lock=False) as reader:
            return reader.run_item_keys(task, OPTIONAL_ITEM_COLUMNS)

    return RunView(store.path, task, "rows", n_rows), RunView(store.path, task, "skips", n_skips), optional


def _kept_plan(
    cfg: ScoreConfig, state: InputState, protocol: Any, start: float
) -> tuple[ScoreResult, Callable[[], set[str]]] | None:
    """The result of a run whose inputs are those the last finished run of its task was planned from, read from the
    store without planning (:mod:`recipe_lib.inference.kept_run`); None when they are not, or a row of it is no
    longer whole (the normal path scores it again)."""
    path = store_path(cfg.out_dir)
    if not path.exists() or path.with_name(LEGACY_NAME).exists():
        return None  # nothing stored yet, or an old results.jsonl the normal path imports and reports
    with ResultStore(path) as store:
        stamp = kept_run(store, cfg.task, state)
        if stamp is None or store.warnings:
            return None
        rows, skipped, optional = _run_rows(store, cfg.task, stamp["rows"], stamp["skips"])
        if store.warnings:
            return None  # a stored row found damaged as it was read: scored again on the normal path
    result = ScoreResult(
        out_dir=Path(cfg.out_dir),
        rows=rows,
        skipped=skipped,
        n_inputs=stamp["inputs"],
        n_scored_now=0,
        n_cached=stamp["cached"],
        seconds=time.perf_counter() - start,
        repeated=list(stamp["repeated"]),
        warnings=[],
        task=cfg.task,
        label_column=cfg.label_column,
        protocol=protocol,
        digest=stamp["digest"],
        reusable=True,
        kept_plan=True,
    )
    return result, optional


@writes_as("score")
def score_videos(cfg: ScoreConfig, progress: bool = True, scorer: Scorer | None = None) -> ScoreResult:
    """Score every clip in ``cfg.inputs``; see the module docstring. ``scorer`` reuses an already loaded one
    (local engine only). The inputs are planned and scored chunk by chunk (:func:`recipe_lib.inference.plan.
    iter_plan`): the store keeps the run's order, its duplicates and its skips, and the exports stream from it."""
    start = time.perf_counter()
    cfg, protocol = resolve_settings(cfg)
    if cfg.engine not in ("local", "ray"):
        raise RecipeError(f"unknown engine {cfg.engine!r}", hint="use engine 'local' or 'ray'")
    if cfg.engine == "ray":
        from recipe_lib.inference.ray_engine import check_ray

        check_ray(cfg)  # before any work: Ray installed, the cluster reachable
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Before any work: no link followed, nothing replaced that we did not write.
    claim_outputs(out, score_files(cfg.task))
    setup = plan_setup(cfg)
    if not os.access(out, os.W_OK):
        raise RecipeError(f"cannot write to {out}", hint="choose a writable --out folder")
    task = cfg.task
    # Local inputs unchanged since the last finished run of this task: its plan, rows and counts are the stored ones.
    state = input_state(cfg, setup.settings)
    if state is not None:
        kept = _kept_plan(cfg, state, protocol, start)
        if kept is not None:
            result, optional = kept
            _write_outputs(cfg, result, optional)
            return result
    n_inputs = n_now = n_cached = own_skips = 0
    repeated: list[str] = []
    lazy = _LazyScorer(cfg, setup.prompt, scorer)
    # Ray scores every missing clip in one pipeline (its actors load the critic once): the plan is still streamed,
    # the missing clips are gathered for it.
    ray_plan = ScorePlan(setup.prompt, [], [], [], {}, [])
    ray_todo: list[tuple[str, dict[str, Any]]] = []
    # Files hashed by an earlier run into this folder are only stat'ed (the store's file_digests); the cache is
    # closed last, once the planning thread has stopped.
    digests = DigestCache(FileDigests(store_path(out)))
    chunks = ahead(iter_plan(cfg, setup, digests=digests))
    with contextlib.closing(digests), contextlib.closing(chunks):
        first_chunk = next(chunks)  # inputs that name nothing fail here, before the store is opened
        with ResultStore(store_path(out)) as store:
            store.start_run(task)
            bar = progress_bar(total=None, desc="scoring", unit="clip", enabled=progress)
            # The bar is closed even when a batch fails (disk full ...), so the error prints on a line of its own.
            with bar:
                for chunk in itertools.chain([first_chunk], chunks):
                    n_inputs += len(chunk.items)
                    repeated += chunk.repeated
                    first = store.run_position(task)
                    listed = [item_text(it) for _, it in chunk.keyed]
                    fresh = store.add_to_run(task, [k for k, _ in chunk.keyed], listed)
                    keyed = []
                    for (key, item), new in zip(chunk.keyed, fresh):
                        if new:
                            keyed.append((key, item))
                        else:
                            chunk.skipped.append({"video": item["video_url"], "reason": DUPLICATE})
                    missing = store.missing_in_run(task, first)
                    todo = [(k, it) for k, it in keyed if k in missing]
                    n_cached += len(keyed) - len(todo)
                    if todo and cfg.engine == "ray":
                        ray_todo += todo
                        ray_plan.local.update({it["video_url"]: chunk.local[it["video_url"]] for _, it in todo})
                    elif todo:
                        n_now += _score_local(cfg, chunk, todo, store, lazy.get(), bar)
                    own_skips += sum(1 for skip in chunk.skipped if skip["reason"] != DUPLICATE)
                    # A reason may quote a server's answer: no secret is printed or written.
                    store.add_skips(task, redact_obj(chunk.skipped))
                if ray_todo:
                    from recipe_lib.inference.ray_engine import score_with_ray

                    n_now = score_with_ray(cfg, ray_plan, ray_todo, store, progress)
                    store.add_skips(task, redact_obj(ray_plan.skipped))
            digest = store.finish_run(task)
            changed = store.run_changed(task)
            n_rows, n_skips = store.run_counts(task)
            rows, skipped, optional = _run_rows(store, task, n_rows, n_skips)
            warnings = list(store.warnings)
            if state is not None and state.settled and not own_skips and not warnings and n_cached + n_now == n_rows:
                # Every clip listed is stored, every skip a duplicate: a rerun with these inputs may take this plan.
                counts = {"inputs": n_inputs, "cached": n_cached + n_now, "repeated": repeated, "rows": n_rows,
                          "skips": n_skips}  # fmt: skip
                store.set_run_stamp(task, run_stamp(state, digest, counts))
    result = ScoreResult(
        out_dir=out,
        rows=rows,
        skipped=skipped,
        n_inputs=n_inputs,
        n_scored_now=n_now,
        n_cached=n_cached,
        seconds=time.perf_counter() - start,
        repeated=repeated,
        warnings=warnings,
        task=task,
        label_column=cfg.label_column,
        protocol=protocol,
        digest=digest,
        reusable=n_now == 0 and not warnings and not changed,
    )
    _write_outputs(cfg, result, optional)
    return result
