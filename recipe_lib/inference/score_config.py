"""What a scoring run is asked to do (:class:`ScoreConfig`, with the vLLM and served-endpoint options) and what it
returns (:class:`ScoreResult`); :func:`recipe_lib.inference.scoring.score_videos` runs it."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal

from recipe_lib.config import SamplingSettings, ScoringProtocol, VideoSettings
from recipe_lib.inference.record import ScoredClip


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
