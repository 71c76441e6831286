"""The scoring stage: clips in, one cached row per clip out, resumable and honest about every skip.

``score_videos(ScoreConfig) -> ScoreResult`` is what ``plausibility score``, the notebooks and the evaluation code call.
Inputs are local paths or URLs (http(s), and s3:// or gs:// through fsspec), fetched into the download cache
(:mod:`recipe_lib.inference.fetch`). With ``engine="local"`` clips are decoded and sized on CPU worker threads one
batch ahead of the model; with ``engine="ray"`` on a Ray cluster (:mod:`recipe_lib.inference.ray_engine`), with the
same rows. Finished batches are committed to ``results.sqlite`` (:mod:`recipe_lib.inference.store`), so a killed run
loses at most the batch in flight and a rerun scores only what is missing. Clips that cannot be read are recorded in
``skipped.jsonl`` with the reason and counted in the summary; they are tried again on the next run (after the user
fixes them).

Video and sampling settings are resolved first (:func:`resolve_settings`): explicit ones (``video_overrides`` /
``sampling_overrides``, i.e. flags) win; then settings the caller passed (``video`` / ``sampling``, labelled by
``video_source`` / ``sampling_source``); otherwise the critic's (:func:`recipe_lib.profiles.critic_settings`: the
demo critic gets the demo settings, any other critic the recipe's). What was used and where each field came from is in
``summary.json`` (``settings``) and :attr:`ScoreResult.protocol`.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import time
from pathlib import Path
from typing import Any

from recipe_lib.config import to_dict
from recipe_lib.errors import RecipeError
from recipe_lib.inference.plan import ScorePlan, plan_scoring, resolve_settings, score_files, scored_row
from recipe_lib.inference.score_config import ScoreConfig, ScoreResult
from recipe_lib.inference.scorers import Scorer, make_scorer
from recipe_lib.inference.store import ResultStore, store_path
from recipe_lib.io import (
    atomic_write_csv,
    atomic_write_json,
    atomic_write_jsonl,
    claim_outputs,
    redact_obj,
    writes_as,
)
from recipe_lib.progress import progress_bar


def _write_outputs(cfg: ScoreConfig, result: ScoreResult) -> None:
    out = Path(cfg.out_dir)
    _, scores, skipped, summary = score_files(cfg.task)
    atomic_write_csv(out / scores, result.frame())
    atomic_write_jsonl(out / skipped, result.skipped)
    # Inputs and URLs are listed redacted; a reason may quote a server's text: the whole summary goes through redact.
    atomic_write_json(out / summary, redact_obj({"config": to_dict(cfg), **result.summary()}))


def _score_local(
    cfg: ScoreConfig,
    plan: ScorePlan,
    todo: list[tuple[str, dict[str, Any]]],
    store: ResultStore,
    scorer: Scorer | None,
    progress: bool,
) -> int:
    """Score ``todo`` in this process; returns how many rows were stored."""
    from recipe_lib.errors import ClipError
    from recipe_lib.inference.requests import batches_by_visual_tokens

    scorer = scorer or make_scorer(cfg, plan.prompt)
    n_now = 0
    # Clips of similar visual-token count share a batch (little padding); rows still come out in input order.
    batches = batches_by_visual_tokens(
        todo, [plan.local[it["video_url"]] for _, it in todo], cfg.video, cfg.batch_size, cfg.max_batch_tokens
    )
    bar = progress_bar(total=len(todo), desc="scoring", unit="clip", enabled=progress)
    # The bar is closed even when a batch fails (disk full ...), so the error prints on a line of its own.
    with bar, cf.ThreadPoolExecutor(max_workers=max(1, cfg.workers)) as pool:

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


@writes_as("score")
def score_videos(cfg: ScoreConfig, progress: bool = True, scorer: Scorer | None = None) -> ScoreResult:
    """Score every clip in ``cfg.inputs``; see the module docstring. ``scorer`` reuses an already loaded one
    (local engine only)."""
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
    plan = plan_scoring(cfg)
    if not os.access(out, os.W_OK):
        raise RecipeError(f"cannot write to {out}", hint="choose a writable --out folder")
    with ResultStore(store_path(out)) as store:
        missing = store.missing(k for k, _ in plan.keyed)
        todo = [(k, it) for k, it in plan.keyed if k in missing]
        n_cached = len(plan.keyed) - len(todo)
        n_now = 0
        if todo and cfg.engine == "ray":
            from recipe_lib.inference.ray_engine import score_with_ray

            n_now = score_with_ray(cfg, plan, todo, store, progress)
        elif todo:
            n_now = _score_local(cfg, plan, todo, store, scorer, progress)
        by_key = store.get_many(k for k, _ in plan.keyed)
        rows = [by_key[k] for k, _ in plan.keyed if k in by_key]
        warnings = list(store.warnings)
    result = ScoreResult(
        out_dir=out,
        rows=rows,
        skipped=redact_obj(plan.skipped),  # a reason may quote a server's answer: no secret is printed or written
        n_inputs=len(plan.items),
        n_scored_now=n_now,
        n_cached=n_cached,
        seconds=time.perf_counter() - start,
        repeated=plan.repeated,
        warnings=warnings,
        task=cfg.task,
        label_column=cfg.label_column,
        protocol=protocol,
    )
    _write_outputs(cfg, result)
    return result
