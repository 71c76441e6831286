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
import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Literal

from recipe_lib.config import SamplingSettings, ScoringProtocol, VideoSettings, to_dict, with_fields
from recipe_lib.data.download import is_remote
from recipe_lib.data.tables import is_dataset_dir, is_table, load_rows
from recipe_lib.errors import DataError, RecipeError
from recipe_lib.inference.record import ScoredClip
from recipe_lib.inference.store import STORE_NAME, ResultStore, result_key, store_path
from recipe_lib.io import (
    atomic_write_csv,
    atomic_write_json,
    atomic_write_jsonl,
    claim_outputs,
    printable,
    utf8_name,
    writes_as,
)
from recipe_lib.prompts import load_prompt
from recipe_lib.video import file_digest, find_videos


def default_workers() -> int:
    """CPU threads decoding clips ahead of the model: enough to keep a fast GPU fed, one core left for the rest."""
    return max(2, min(8, (os.cpu_count() or 2) - 1))


def _opt(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class VLLMOptions:
    """Engine settings of the vLLM backend (``--backend vllm``). Prefix caching is on: the rubric before the video is
    the same for every clip, so its keys and values are computed once."""

    gpu_memory_utilization: float = _opt(0.9, "share of GPU memory vLLM may take")
    max_model_len: int = _opt(16384, "context length the engine reserves (prompt + answer tokens)")
    tensor_parallel_size: int = _opt(1, "GPUs one engine spans")
    enable_prefix_caching: bool = _opt(True, "reuse the shared rubric's keys/values across clips")
    load_format: str = _opt("auto", "vLLM load format; 'dummy' builds random weights from config.json (benchmarks)")
    enforce_eager: bool = _opt(False, "skip torch.compile and CUDA graphs (starts faster, runs slower)")


@dataclasses.dataclass
class EndpointOptions:
    """A served OpenAI-compatible endpoint (``--backend openai``: ``vllm serve``, an NVIDIA NIM, ...)."""

    base_url: str | None = _opt(None, "the server's API root, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = _opt(None, "environment variable that holds the API key (the key never goes in a file)")
    served_model: str | None = _opt(None, "model name the server knows (default: --model)")
    concurrency: int = _opt(8, "requests in flight at once")
    timeout: float = _opt(120.0, "seconds to wait for one answer")
    retries: int = _opt(3, "retries of a failed request (with exponential back-off)")


@dataclasses.dataclass
class ScoreConfig:
    inputs: list[str]
    out_dir: Path
    model: str
    prompt: str = "video_reward"
    mode: Literal["generate", "expected"] = "expected"
    video: VideoSettings | None = None  # None: the critic's (demo critic: demo settings; any other: the recipe's)
    sampling: SamplingSettings | None = None  # None: the critic's, like video
    video_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # fields set by flags: win over all
    sampling_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    video_source: str = "given"  # what chose ``video`` when it is given (e.g. "eval conversations")
    sampling_source: str = "given"
    batch_size: int = 8
    device: str = "auto"
    dtype: str = "auto"
    split: str | None = None
    limit: int | None = None
    use_caption: bool = False
    workers: int = dataclasses.field(default_factory=lambda: default_workers())
    max_batch_tokens: int | None = None  # cap on visual tokens per batch (clips are grouped by similar size)
    backend: Literal["hf", "vllm", "openai"] = "hf"
    vllm: VLLMOptions = dataclasses.field(default_factory=VLLMOptions)
    endpoint: EndpointOptions = dataclasses.field(default_factory=EndpointOptions)
    trust_remote_code: bool = False
    label_column: str = "pc"  # checked before scoring: empty or a whole score 1-5
    require_label_column: bool = False  # the column was named by the user: a table without it is an error
    engine: Literal["local", "ray"] = "local"  # ray: score on a Ray cluster (recipe_lib.inference.ray_engine)
    address: str | None = None  # the Ray cluster (host:port or "auto"); None starts a local one on 127.0.0.1
    num_workers: int = 1  # ray: scoring actors, one critic each
    gpus_per_worker: float = 0.0  # ray: GPUs per scoring actor (0 scores on CPU)
    download_cache: Path | None = None  # where URL inputs are fetched to (default: build/cache/videos)
    task: str = "pc"  # pc, sa or rule (recipe_lib.tasks); one task per call, its rows keyed apart in one store
    caption_column: str = "caption"  # task sa: the column holding the text the video should show


@dataclasses.dataclass
class ScoreResult:
    out_dir: Path
    rows: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    n_inputs: int
    n_scored_now: int
    n_cached: int
    seconds: float
    repeated: list[str] = dataclasses.field(default_factory=list)  # paths given more than once, scored once
    warnings: list[str] = dataclasses.field(default_factory=list)  # damaged stored rows, imported results.jsonl
    task: str = "pc"
    label_column: str = "pc"  # the label this task's rows are measured against (rule: the rule columns)
    protocol: ScoringProtocol | None = None  # the video/sampling settings used and where they came from

    @property
    def n_unparsed(self) -> int:
        return sum(1 for r in self.rows if r.get("score") is None)

    def summary(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "inputs": self.n_inputs,
            "scored": len(self.rows),
            "scored_this_run": self.n_scored_now,
            "from_cache": self.n_cached,
            "unparsed": self.n_unparsed,
            "skipped": len(self.skipped),
            "repeated_paths": len(self.repeated),
            "store_warnings": len(self.warnings),
            "seconds": round(self.seconds, 3),
            "settings": self.protocol.to_json() if self.protocol else None,
        }

    def frame(self):  # noqa: ANN201 - pandas.DataFrame

        return results_frame(self.rows, self.label_column)


def results_frame(rows: list[dict[str, Any]], label_column: str = "pc"):  # noqa: ANN201
    """A flat table of result rows (probabilities as p1..p5 columns; sa and rule rows add the text they were shown,
    rule rows the rule's label and the judgement with its three probabilities)."""
    import pandas as pd

    flat = []
    for r in rows:
        clip = ScoredClip.from_json(r)
        item = clip.item
        rule = clip.task == "rule"
        rec = {
            "video": clip.video,
            "label": item.get("rule_label") if rule else clip.label(label_column),
            "score": clip.score,
            "expected_score": clip.expected_score,
            "parse_error": clip.parse_error,
            "caption": item.get("caption"),
        }
        for i, p in enumerate(clip.probs or [None] * 5, start=1):
            rec[f"p{i}"] = p
        rec["digit_mass"] = clip.digit_mass
        rec["raw_output"] = clip.raw_output
        rec["model_s"] = clip.timing.get("model_s")
        for k in ("violation", "violation_category", "scene", "model_name", "category", "is_hard"):
            if k in item:
                rec[k] = item[k]
        if clip.task != "pc":
            rec["task"] = clip.task
            rec["shown_text"] = clip.shown_text()
        if rule:
            rec["rule_column"] = item.get("rule_column")
            rec["judgement"] = clip.judgement
            for name, p in (clip.judgement_probs or {}).items():
                rec[f"p_{name}"] = p
        flat.append(rec)
    return pd.DataFrame(flat)


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


def resolve_inputs(
    inputs: list[str], split: str | None = None, label_column: str = "pc", require_label_column: bool = False
) -> tuple[list[dict[str, Any]], list[str]]:
    """Items as :func:`resolve_items` gives them, and the file paths given more than once (a folder and a glob over
    it, or one file twice): those are scored once and counted, not listed as skips, because the clip is scored."""
    if not inputs:
        raise RecipeError("no videos given", hint="pass video files, a folder, a glob, a dataset folder or a table")
    items: list[dict[str, Any]] = []
    loose: list[str] = []
    for raw in inputs:
        path = Path(raw)
        if is_remote(raw):
            items.append({"video_url": str(raw)})  # a clip given by URL (fetched when scoring)
        elif is_dataset_dir(path) or is_table(path):
            rows = load_rows(path, split=split)
            if not rows:
                raise DataError(f"{path} has no rows", hint="a table of clips needs one row per clip with a video_url")
            if require_label_column and label_column not in rows[0]:
                raise DataError(
                    f"{path} has no column '{label_column}' (named by --label-column)",
                    hint=f"its columns: {', '.join(map(str, rows[0]))}",
                )
            for i, row in enumerate(rows):
                url = row.get("video_url")
                if not url:
                    raise DataError(f"{path}: row {i} has no 'video_url'", hint="every row needs a video path")
                url = str(url)
                check_label(row.get(label_column), f"{path} row {i} ({Path(url).name})", label_column)
                if not is_remote(url) and not Path(url).is_absolute():
                    url = str((path.parent if path.is_file() else path).joinpath(url))
                items.append({**row, "video_url": url})
        else:
            loose.append(raw)
    seen: set[str] = set()
    repeated: list[str] = []
    if split is not None and loose and len(loose) == len(inputs):
        raise DataError(
            f"--split {split} names a split, but the inputs are video files, not a dataset folder",
            hint="drop --split (it selects a split of a dataset folder that holds several)",
        )
    for raw in loose:
        for p in find_videos([raw]):
            real = os.path.realpath(p)
            if real in seen:
                repeated.append(str(p))
                continue
            seen.add(real)
            items.append({"video_url": str(p)})
    if not items:
        raise RecipeError(f"no videos found in {', '.join(inputs)}")
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


# The store's lock and SQLite's -wal/-shm files are not claimed: they hold no exported data, and another run holding
# the lock is reported by the store.
SCORE_FILES = (STORE_NAME, "scores.csv", "skipped.jsonl", "summary.json")


def score_files(task: str = "pc") -> tuple[str, ...]:
    """The files one task's scoring writes: one store for every task, ``scores.csv`` (pc) or ``scores_<task>.csv``."""
    from recipe_lib.tasks import task_file

    return (STORE_NAME, *(task_file(name, task) for name in SCORE_FILES[1:]))


def _resolved_dtype(cfg: ScoreConfig) -> str:
    from recipe_lib.models.loading import resolve_device, resolve_dtype

    return resolve_dtype(cfg.dtype, resolve_device(cfg.device) if cfg.backend == "hf" else "cuda")


def _write_outputs(cfg: ScoreConfig, result: ScoreResult) -> None:
    out = Path(cfg.out_dir)
    _, scores, skipped, summary = score_files(cfg.task)
    atomic_write_csv(out / scores, result.frame())
    atomic_write_jsonl(out / skipped, result.skipped)
    atomic_write_json(out / summary, {"config": to_dict(cfg), **result.summary()})


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


def _make_scorer(cfg: ScoreConfig, prompt: Any) -> Any:
    if cfg.backend == "vllm":
        from recipe_lib.inference.vllm import VLLMScorer

        return VLLMScorer(cfg, prompt)
    if cfg.backend == "openai":
        from recipe_lib.inference.endpoint import EndpointScorer

        return EndpointScorer(cfg, prompt)
    from recipe_lib.inference.hf import HFScorer
    from recipe_lib.models.loading import load_critic

    critic = load_critic(cfg.model, device=cfg.device, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    return HFScorer(critic, prompt, cfg.video, cfg.sampling, mode=cfg.mode, use_caption=cfg.use_caption)


@dataclasses.dataclass
class ScorePlan:
    """What a run has to do, worked out on the driver before any model is loaded: the clips with their cache keys
    (``keyed``: key -> item, in input order), the local file of each (``local``: URLs fetched into the cache), and the
    skips found on the way."""

    prompt: Any
    items: list[dict[str, Any]]
    repeated: list[str]
    keyed: list[tuple[str, dict[str, Any]]]
    local: dict[str, str]
    skipped: list[dict[str, Any]]


def _local_files(cfg: ScoreConfig, items: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> dict[str, str]:
    """video_url -> local file for every item (URLs fetched through the download cache, in parallel)."""
    from recipe_lib.inference.fetch import FetchFailure, fetch

    urls = list(dict.fromkeys(it["video_url"] for it in items if is_remote(it["video_url"])))
    local = {it["video_url"]: it["video_url"] for it in items if not is_remote(it["video_url"])}
    if urls:
        with cf.ThreadPoolExecutor(max_workers=max(1, min(8, cfg.workers))) as pool:
            futures = {u: pool.submit(fetch, u, cfg.download_cache) for u in urls}
            for url, fut in futures.items():
                try:
                    local[url] = str(fut.result())
                except FetchFailure as exc:
                    skipped.append({"video": url, "reason": exc.reason})
    return local


def plan_scoring(cfg: ScoreConfig) -> ScorePlan:
    """Resolve the inputs, fetch URLs, and key every clip by its content and the settings."""
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
    items, repeated = resolve_inputs(cfg.inputs, cfg.split, cfg.label_column, cfg.require_label_column)
    if cfg.limit is not None:
        items = items[: cfg.limit]
    items, task_skips = tasks.prepare_items(task, items, tasks.TaskColumns(caption=cfg.caption_column))
    settings = {
        "model": model_fingerprint(cfg.model),
        "prompt": prompt.digest(),
        "mode": cfg.mode,
        "video": to_dict(cfg.video),
        "sampling": to_dict(cfg.sampling) if cfg.mode == "generate" else None,
        "caption": cfg.use_caption,
        "dtype": _resolved_dtype(cfg),  # a bfloat16 row is never served as the float32 one
    }
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
    items = named
    local = _local_files(cfg, items, skipped)
    keyed: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for item in items:
        url = item["video_url"]
        if url not in local:
            continue  # a URL that could not be fetched: already a skip
        try:
            digest = file_digest(local[url])
        except FileNotFoundError:
            skipped.append({"video": url, "reason": f"video not found: {url}"})
            continue
        except IsADirectoryError:
            skipped.append({"video": url, "reason": f"expected a video file, got a folder: {url}"})
            continue
        except OSError as exc:
            skipped.append({"video": url, "reason": f"cannot read {printable(url)}: {exc.strerror or exc}"})
            continue
        key = result_key(content=digest, **settings, **tasks.key_parts(task, item))
        if key in seen:
            skipped.append({"video": url, "reason": "duplicate: same content as an earlier clip in this run"})
            continue
        seen.add(key)
        keyed.append((key, {**item, "video_sha256": digest}))
    return ScorePlan(prompt, items, repeated, keyed, local, skipped)


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
        item={k: v for k, v in item.items() if k != "video_sha256"},
        task=cfg.task,
        **row,
    ).to_json()


def _score_local(
    cfg: ScoreConfig,
    plan: ScorePlan,
    todo: list[tuple[str, dict[str, Any]]],
    store: ResultStore,
    scorer: Any,
    progress: bool,
) -> int:
    """Score ``todo`` in this process; returns how many rows were stored."""
    from tqdm.auto import tqdm

    from recipe_lib.errors import ClipError
    from recipe_lib.inference.requests import batches_by_visual_tokens

    scorer = scorer or _make_scorer(cfg, plan.prompt)
    n_now = 0
    # Clips of similar visual-token count share a batch (little padding); rows still come out in input order.
    batches = batches_by_visual_tokens(
        todo, [plan.local[it["video_url"]] for _, it in todo], cfg.video, cfg.batch_size, cfg.max_batch_tokens
    )
    bar = tqdm(total=len(todo), desc="scoring", unit="clip", disable=not progress)
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
def score_videos(cfg: ScoreConfig, progress: bool = True, scorer: Any = None) -> ScoreResult:
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
        out, rows, plan.skipped, len(plan.items), n_now, n_cached, time.perf_counter() - start, plan.repeated
    )
    result.warnings = warnings
    result.task = cfg.task
    result.label_column = cfg.label_column
    result.protocol = protocol
    _write_outputs(cfg, result)
    return result
