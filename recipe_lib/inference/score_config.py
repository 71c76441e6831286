"""What a scoring run is asked to do (:class:`ScoreConfig`, with the vLLM and served-endpoint options) and what it
returns (:class:`ScoreResult`); :func:`recipe_lib.inference.scoring.score_videos` runs it."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from recipe_lib.config import SamplingSettings, ScoringProtocol, VideoSettings
from recipe_lib.data.download import DEFAULT_DEADLINE, is_remote
from recipe_lib.io import remember_url
from recipe_lib.validation import ConfigError, check_fields


def default_workers() -> int:
    """CPU threads decoding clips ahead of the model: enough to keep a fast GPU fed, one core left for the rest."""
    return max(2, min(8, (os.cpu_count() or 2) - 1))


def _opt(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


def _field(help: str, **kwargs: Any) -> Any:
    return dataclasses.field(metadata={"help": help}, **kwargs)


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
    max_num_seqs: int | None = _opt(None, "requests the engine runs at once (default: vLLM's)")
    max_num_batched_tokens: int | None = _opt(None, "tokens the engine runs in one step (default: vLLM's)")

    def __post_init__(self) -> None:
        check_fields(self)


@dataclasses.dataclass
class EndpointOptions:
    """A served OpenAI-compatible endpoint (``--backend openai``: ``vllm serve``, an NVIDIA NIM, ...)."""

    base_url: str | None = _opt(None, "the server's API root, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = _opt(None, "environment variable that holds the API key (the key never goes in a file)")
    served_model: str | None = _opt(None, "model name the server knows (default: --model)")
    concurrency: int = _opt(8, "requests in flight at once")
    timeout: float = _opt(
        120.0,
        "seconds one request (each attempt) may take in all: connect, response headers and body. At the deadline the "
        "connection is closed, however slowly the server sends, and the clip is a skip, tried again on the next run",
    )
    retries: int = _opt(3, "retries of a failed request (with exponential back-off)")

    def __post_init__(self) -> None:
        check_fields(self)
        if self.base_url:
            self.base_url = remember_url(str(self.base_url))  # user:password never reaches a file or a line


@dataclasses.dataclass
class ScoreConfig:
    """One scoring run. The help texts are the ``plausibility score`` options' (:func:`recipe_lib.commands.score.
    add_scoring_args` builds the flags from these fields); the numeric limits are checked here, so a notebook gets
    the same one-line errors as the command (:func:`recipe_lib.validation.check_fields`)."""

    inputs: list[str] = _field(help="video files, folders, globs, dataset folders or tables; paths or URLs")
    out_dir: Path = _field(help="output folder (results.sqlite, scores.csv, skipped.jsonl, summary.json)")
    model: str = _field(help="local checkpoint folder or hub id (default: the profile's critic)")
    prompt: str = _opt("video_reward", "prompt YAML path or name in prompts/")
    mode: Literal["expected", "generate"] = _opt(
        "expected", "expected: read p(1..5) in one pass (fast); generate: sample answers"
    )
    video: VideoSettings | None = None  # None: the critic's (demo critic: demo settings; any other: the recipe's)
    sampling: SamplingSettings | None = None  # None: the critic's, like video
    video_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # fields set by flags: win over all
    sampling_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    video_source: str = "given"  # what chose ``video`` when it is given (e.g. "eval conversations")
    sampling_source: str = "given"
    batch_size: int = _opt(8, "clips per forward pass")
    device: str = _opt("auto", "cpu, cuda, cuda:1 or auto")
    dtype: str = _opt("auto", "float32, bfloat16, float16 or auto")
    precision: Literal["dtype", "fp8"] = _opt(
        "dtype",
        "dtype: every layer in --dtype; fp8: the language model's and vision tower's linear layers in float8 "
        "(torchao, dynamic rowwise scaling; GPUs with compute capability >= 8.9; --backend vllm: vLLM's fp8)",
    )
    vision_path: Literal["auto", "stock", "batched", "packed", "fused", "compiled"] = _opt(
        "auto",
        "hf backend, Qwen2.5-VL: the vision tower's path, each adding one change to the one before: stock, batched "
        "(attention per group of equal windows), packed (one attention call per block), fused (each block one "
        "function), compiled (fused + torch.compile, once per clip shape); auto: fused on CUDA, batched on CPU",
    )
    split: str | None = _opt(None, "split name when a dataset folder holds several")
    limit: int | None = _opt(None, "score only the first N clips")
    use_caption: bool = _opt(False, "add each clip's caption to the prompt")
    workers: int = _field(
        default_factory=default_workers, help="CPU threads decoding clips ahead of the model (default: cores-1, 2-8)"
    )
    max_batch_tokens: int | None = _opt(None, "cap on visual tokens per batch; clips are grouped by similar size")
    backend: Literal["hf", "vllm", "openai"] = _opt(
        "hf", "hf: transformers in this process; vllm: a vLLM engine in this process; openai: a served endpoint"
    )
    vllm: VLLMOptions = dataclasses.field(default_factory=VLLMOptions)
    endpoint: EndpointOptions = dataclasses.field(default_factory=EndpointOptions)
    trust_remote_code: bool = _opt(False, "allow code shipped with the checkpoint to run (off unless asked)")
    label_column: str = "pc"  # checked before scoring: empty or a whole score 1-5
    require_label_column: bool = False  # the column was named by the user: a table without it is an error
    engine: Literal["local", "ray"] = _opt("local", "local: this process; ray: a Ray cluster (needs the ray extra)")
    address: str | None = _opt(None, "Ray cluster head as host:port, or 'auto' (default: start a local cluster)")
    num_workers: int = _opt(1, "ray: scoring actors, one critic each")
    gpus_per_worker: float = _opt(0.0, "ray: GPUs per scoring actor")
    download_cache: Path | None = _opt(None, "where URL inputs are fetched to (default: build/cache/videos)")
    download_deadline: float = _opt(
        DEFAULT_DEADLINE,
        "seconds one URL's download may take in all: connect, response headers and body of every attempt, whatever "
        "the server's pace. At the deadline the connection is closed and the clip is a skip, tried again on the next "
        "run",
    )
    task: str = "pc"  # pc, sa or rule (recipe_lib.tasks); one task per call, its rows keyed apart in one store
    caption_column: str = _opt("caption", "task sa: column with the text the video should show")

    def __post_init__(self) -> None:
        check_fields(self)
        if self.precision == "fp8" and self.backend == "openai":
            raise ConfigError(
                "precision fp8 applies to the model in this process (--backend hf or vllm)",
                hint="a served endpoint picks its own precision; leave --precision out",
            )
        # URLs are listed redacted (recipe_lib.io.remember_url): config dumps, rows and reports hold no credentials.
        self.inputs = [remember_url(i) if isinstance(i, str) and is_remote(i) else i for i in self.inputs]


@dataclasses.dataclass
class ScoreResult:
    """What a scoring run returns. ``rows`` and ``skipped`` are lists for a run of up to ``IN_MEMORY_ROWS`` clips;
    above that they are :class:`~recipe_lib.inference.store.RunView` sequences that read the run's rows and skips
    from ``results.sqlite`` when iterated (``len`` and slices work, nothing is held), so a run of millions of clips
    never materialises them. Callers that need every row at once on a large run should stream them instead."""

    out_dir: Path
    rows: Sequence[dict[str, Any]]
    skipped: Sequence[dict[str, Any]]
    n_inputs: int
    n_scored_now: int
    n_cached: int
    seconds: float
    repeated: list[str] = dataclasses.field(default_factory=list)  # paths given more than once, scored once
    warnings: list[str] = dataclasses.field(default_factory=list)  # damaged stored rows, imported results.jsonl
    task: str = "pc"
    label_column: str = "pc"  # the label this task's rows are measured against (rule: the rule columns)
    protocol: ScoringProtocol | None = None  # the video/sampling settings used and where they came from
    unparsed: int | None = None  # counted while the rows were exported; None: counted from ``rows`` when asked
    # What the run listed (ResultStore.finish_run), and whether its exports may be kept from an earlier run with the
    # same digest: nothing was scored now and no stored row was found damaged (recipe_lib.inference.kept).
    digest: str | None = None
    reusable: bool = False
    # Whether the run's plan was the last finished run's, taken from the store because its local inputs and settings
    # were found unchanged, with no row read or keyed (recipe_lib.inference.kept_run); the counts are the same.
    kept_plan: bool = False

    @property
    def in_memory(self) -> bool:
        """Whether ``rows`` and ``skipped`` are plain lists (a small run) rather than views of the store."""
        return isinstance(self.rows, list) and isinstance(self.skipped, list)

    @property
    def n_unparsed(self) -> int:
        if self.unparsed is not None:
            return self.unparsed
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
        """Every row as one table (for a large run this reads them all: prefer ``scores.csv`` or streaming)."""
        return results_frame(self.rows, self.label_column)


# Input columns scores.csv carries when a row has them (generator and violation metadata of the clip).
OPTIONAL_ITEM_COLUMNS = ("violation", "violation_category", "scene", "model_name", "category", "is_hard")


def flat_record(row: dict[str, Any], label_column: str) -> dict[str, Any]:
    """One row of ``scores.csv`` from a stored result row (probabilities as p1..p5 columns; sa and rule rows add the
    text they were shown, rule rows the rule's label and the judgement with its three probabilities), read straight
    from the JSON dict (no record object, no DataFrame: a million rows are written in seconds)."""
    item = row.get("item") or {}
    task = row.get("task", "pc")
    rule = task == "rule"
    rec = {
        "video": row.get("video"),
        "label": item.get("rule_label") if rule else item.get(label_column),
        "score": row.get("score"),
        "expected_score": row.get("expected_score"),
        "parse_error": row.get("parse_error"),
        "caption": item.get("caption"),
    }
    for i, p in enumerate(row.get("probs") or [None] * 5, start=1):
        rec[f"p{i}"] = p
    rec["digit_mass"] = row.get("digit_mass")
    rec["raw_output"] = row.get("raw_output")
    rec["model_s"] = (row.get("timing") or {}).get("model_s")
    for k in OPTIONAL_ITEM_COLUMNS:
        if k in item:
            rec[k] = item[k]
    if task != "pc":
        fields = item.get("prompt_fields") or {}
        rec["task"] = task
        rec["shown_text"] = fields.get("caption") or fields.get("rule")
    if rule:
        rec["rule_column"] = item.get("rule_column")
        rec["judgement"] = row.get("judgement")
        for name, p in (row.get("judgement_probs") or {}).items():
            rec[f"p_{name}"] = p
    return rec


def results_frame(rows: Iterable[dict[str, Any]], label_column: str = "pc"):  # noqa: ANN201
    """A flat table of result rows: one :func:`flat_record` a row."""
    import pandas as pd

    return pd.DataFrame([flat_record(r, label_column) for r in rows])
