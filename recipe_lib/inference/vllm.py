"""Score clips with vLLM (the ``gpu`` extra): the same requests and result rows as the transformers backend.

``VLLMScorer(cfg, prompt)`` has the scorer interface :func:`recipe_lib.inference.scoring.score_videos` drives:
``prepare(item)`` does the CPU work for one clip (decode and size the frames, render the prompt) and
``score_batch(prepared)`` sends a batch to the engine. Prompts, frames and processor keywords come from
:mod:`recipe_lib.inference.requests`, shared with :class:`recipe_lib.inference.hf.HFScorer`, so both backends see
the same text and the same pixels.

``generate``  ``SamplingParams`` from the recipe's sampling settings (``n = trials`` answers per clip), each parsed.
``expected``  one token after the prompt's answer prefix with the log-probabilities of exactly the five digit tokens
              (``SamplingParams(logprob_token_ids=...)``); p(1..5) are their probabilities renormalised and
              ``digit_mass`` their sum, as in the transformers backend. A NaN, infinite or positive log-probability,
              or a digit missing from the answer, makes the clip a skip with the reason (:func:`row_from_output`).

Engine settings (:class:`recipe_lib.inference.score_config.VLLMOptions`: memory share, context length, tensor parallel
size, prefix caching, ``load_format="dummy"`` for random weights) come from ``ScoreConfig.vllm``
(``plausibility score --backend vllm --gpu-memory-utilization ... --max-model-len ... --tensor-parallel-size ...``).

vLLM is imported only when the engine is first needed, so this module loads (and its request building is tested)
without it. vLLM forces the ``spawn`` start method once CUDA is initialised, which is why the engine is built here,
in an importable module, and never in a notebook cell.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from recipe_lib.errors import RecipeError
from recipe_lib.inference.hf import Prepared
from recipe_lib.inference.requests import (
    SCORES,
    SKIP,
    check_mode,
    clip_text,
    digit_token_ids,
    generate_row,
    row_from_answer_logprobs,
    vllm_input,
    vllm_sampling_kwargs,
)
from recipe_lib.models.family import family_of_processor, patch_factor
from recipe_lib.models.loading import is_adapter_folder
from recipe_lib.prompts import PromptSpec
from recipe_lib.video import load_for_model

if TYPE_CHECKING:
    from recipe_lib.inference.score_config import ScoreConfig

INSTALL_HINT = "install the gpu extra on a CUDA machine: pip install -e '.[gpu]' (or use --backend hf)"


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise RecipeError("the vLLM backend needs the vllm package, which is not installed", hint=INSTALL_HINT) from exc
    return vllm


class VLLMScorer:
    """Batched scoring through a vLLM engine (built on the first batch)."""

    @classmethod
    def from_config(cls, cfg: ScoreConfig, prompt: PromptSpec) -> VLLMScorer:
        return cls(cfg, prompt)

    def __init__(
        self,
        cfg: ScoreConfig,
        prompt: PromptSpec,
        engine_kwargs: dict[str, Any] | None = None,
        sampling_kwargs: dict[str, Any] | None = None,
    ) -> None:
        check_mode(cfg.mode)
        prompt.require(cfg.mode)
        if is_adapter_folder(cfg.model):
            raise RecipeError(
                f"{cfg.model} is a LoRA adapter checkpoint; the vLLM backend reads full model folders",
                hint=f"merge it first (plausibility merge {cfg.model} --out DIR) or score with --backend hf",
            )
        self.cfg = cfg
        self.prompt = prompt
        self.mode = cfg.mode
        self.video_settings = cfg.video
        self.sampling = cfg.sampling
        self.use_caption = cfg.use_caption
        self.options = cfg.vllm
        self.engine_kwargs = dict(engine_kwargs or {})
        self.sampling_kwargs = dict(sampling_kwargs or {})  # e.g. ignore_eos for fixed-length benchmark rows
        self.processor = self._load_processor()
        # Qwen2.5-VL or Qwen3-VL (Cosmos-Reason2): how frames are sized and handed to the engine.
        self.family = family_of_processor(self.processor)
        self.patch_factor = patch_factor(self.processor)
        self.digit_ids = digit_token_ids(self.processor.tokenizer) if self.mode == "expected" else None
        self._llm: Any = None

    def _load_processor(self) -> Any:
        from transformers import AutoProcessor

        try:
            return AutoProcessor.from_pretrained(str(self.cfg.model), trust_remote_code=self.cfg.trust_remote_code)
        except (OSError, ValueError) as exc:
            raise RecipeError(
                f"could not load the processor of '{self.cfg.model}': {str(exc).splitlines()[0]}",
                hint="pass a local checkpoint folder or a hub id of a Qwen2.5-VL model (e.g. nvidia/Cosmos-Reason1-7B)",
            ) from exc

    def engine_args(self) -> dict[str, Any]:
        """Keyword arguments of ``vllm.LLM`` for this configuration."""
        from recipe_lib.models.loading import DTYPES

        key = str(self.cfg.dtype).strip().lower()
        if key != "auto" and key not in DTYPES:
            raise RecipeError(f"unknown dtype '{self.cfg.dtype}'", hint="use auto, float32, bfloat16 or float16")
        dtype = "auto" if key == "auto" else DTYPES[key]
        limits = {
            "max_num_seqs": self.options.max_num_seqs,
            "max_num_batched_tokens": self.options.max_num_batched_tokens,
        }
        return {
            "model": str(self.cfg.model),
            "dtype": dtype,
            "trust_remote_code": self.cfg.trust_remote_code,
            "seed": self.sampling.seed,
            "limit_mm_per_prompt": {"video": 1, "image": 0},
            "max_model_len": self.options.max_model_len,
            "gpu_memory_utilization": self.options.gpu_memory_utilization,
            "tensor_parallel_size": self.options.tensor_parallel_size,
            "enable_prefix_caching": self.options.enable_prefix_caching,
            "load_format": self.options.load_format,
            "enforce_eager": self.options.enforce_eager,
            **{k: v for k, v in limits.items() if v is not None},
            **({"quantization": "fp8"} if self.cfg.precision == "fp8" else {}),
            **self.engine_kwargs,
        }

    def _engine(self) -> Any:
        if self._llm is None:
            vllm = _import_vllm()
            self._llm = vllm.LLM(**self.engine_args())
        return self._llm

    def prepare(self, item: dict[str, Any]) -> Prepared:
        """CPU work for one clip (safe to run in a worker thread), the engine request included: the frames' copy to
        vLLM's ``(T, H, W, 3)`` layout happens here, not on the thread that feeds the engine."""
        start = time.perf_counter()
        video = load_for_model(item["video_url"], self.video_settings, self.patch_factor)
        text = clip_text(self.processor, self.prompt, item, self.video_settings, self.mode, self.use_caption)
        request = vllm_input(text, video, self.family)
        return Prepared(item=item, text=text, video=video, preprocess_s=time.perf_counter() - start, encoded=request)

    def requests(self, batch: list[Prepared]) -> list[dict[str, Any]]:
        """The engine inputs of a batch (one per clip): the request :meth:`prepare` built, or built now."""
        return [p.encoded if p.encoded is not None else vllm_input(p.text, p.video, self.family) for p in batch]

    def score_batch(self, batch: list[Prepared]) -> list[dict[str, Any]]:
        vllm = _import_vllm()
        llm = self._engine()
        kwargs = {**vllm_sampling_kwargs(self.sampling, self.mode, self.digit_ids), **self.sampling_kwargs}
        params = vllm.SamplingParams(**kwargs)
        start = time.perf_counter()
        outputs = llm.generate(self.requests(batch), params, use_tqdm=False)
        elapsed = time.perf_counter() - start
        rows = []
        for p, out in zip(batch, outputs):
            row = row_from_output(out, self.mode, self.digit_ids or [], self.prompt.parse_format())
            if SKIP not in row:
                row["timing"] = {"preprocess_s": round(p.preprocess_s, 4), "model_s": round(elapsed / len(batch), 4)}
                row["frames"] = int(p.video.frames.shape[0])
                row["frame_size"] = [int(p.video.frames.shape[2]), int(p.video.frames.shape[3])]
            rows.append(row)
        return rows


def row_from_output(output: Any, mode: str, digit_ids: Sequence[int], answer_format: str) -> dict[str, Any]:
    """The result row of one of vLLM's ``RequestOutput`` objects, or a skip (``{SKIP: reason}``).

    It reads ``output.outputs`` (the completions): each one's ``text`` in ``generate`` mode; in ``expected`` mode the
    first completion's ``logprobs[0]``, the answer token's ``{token id: Logprob}`` with ``Logprob.logprob``. The digits'
    token ids (``digit_ids``, in the order 1-5) were all requested (``logprob_token_ids``), so a digit missing from
    the answer is a skip, as is any log-probability that is NaN, infinite or above 0
    (:func:`~recipe_lib.inference.requests.row_from_answer_logprobs`, which the endpoint backend shares): the row
    would be wrong without a word (a dropped digit is p = 0), so the clip is listed with the reason and tried again on
    the next run."""
    if mode != "expected":
        return generate_row([o.text for o in output.outputs], answer_format)
    steps = output.outputs[0].logprobs if output.outputs else None
    if not steps:
        return {SKIP: "the engine's answer holds no log-probabilities for the answer token"}
    returned = {int(tid): lp for tid, lp in steps[0].items()}
    missing = [str(d) for tid, d in zip(digit_ids, SCORES) if tid not in returned]
    if missing:
        return {
            SKIP: f"the engine's answer lacks the log-probability of the digit(s) {', '.join(missing)} it was asked for"
        }
    digit = {tid: str(d) for tid, d in zip(digit_ids, SCORES)}
    answers = [(digit.get(tid, f"<token id {tid}>"), getattr(lp, "logprob", lp)) for tid, lp in returned.items()]
    return row_from_answer_logprobs(answers, "the engine's answer")
