"""Request building shared by the scoring backends (transformers and vLLM), and batch planning.

One clip becomes one request: the chat text (rubric, video placeholder, question, and for ``expected`` mode the
prompt file's ``answer_prefix``, e.g. ``<answer>\\n``), the sampled and sized frames, and where they lie in the clip
(the fps they stand for; for Qwen3-VL critics the frame positions, from which its processor writes timestamps). The
transformers backend encodes a request with the model's processor (on a CPU worker thread, so the GPU never waits
for it) and collates requests into a left-padded batch; the vLLM backend hands the same text and frames to its
engine. Rows are built from model outputs by the same functions for both backends, so their results have the same
shape.

Batches of clips with similar visual-token counts waste less work on padding: :func:`plan_batches` sorts by count
and cuts batches under a token budget; :func:`estimate_visual_tokens` reads the count from a file's header.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from recipe_lib.config import SamplingSettings, VideoSettings
from recipe_lib.errors import RecipeError
from recipe_lib.inference.parsing import parse_answer
from recipe_lib.models.family import QWEN3_VL, family_of_processor
from recipe_lib.prompts import PromptSpec, build_messages
from recipe_lib.video import ModelVideo, visual_tokens

SCORES = (1, 2, 3, 4, 5)
DIGIT_TEXTS = frozenset(str(d) for d in SCORES)
SKIP = "skip_reason"  # a backend's row holding only this key is a skip: listed with the reason, never stored
MODES = ("generate", "expected")
TOP_LOGPROBS = 20  # the most a served OpenAI-compatible endpoint returns per token


# --------------------------------------------------------------------------------------------------------------------
# prompt text and tokens


def render_prompt(
    processor: Any,
    prompt: PromptSpec,
    video: str,
    video_settings: VideoSettings,
    caption: str | None,
    answer_prefix: bool,
) -> str:
    """The chat text of one clip (the chat template applied to [system, user(video + question)]), followed by the
    prompt's ``answer_prefix`` when ``answer_prefix`` is set (``expected`` mode)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    special = [*getattr(tokenizer, "all_special_tokens", ()), *getattr(tokenizer, "added_tokens_encoder", {})]
    messages = build_messages(prompt, video, video_settings, caption=caption, special_tokens=special)
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + prompt.expected_prefix() if answer_prefix else text


def digit_token_ids(tokenizer: Any) -> list[int]:
    """Token ids of "1".."5"; each digit must be a single token (true for Qwen tokenizers and the demo critic)."""
    ids = []
    for d in SCORES:
        toks = tokenizer.encode(str(d), add_special_tokens=False)
        if len(toks) != 1:
            raise RecipeError(f"the tokenizer splits the digit {d} into {len(toks)} tokens; expected mode needs one")
        ids.append(toks[0])
    return ids


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise RecipeError(f"unknown scoring mode '{mode}'", hint="use 'generate' or 'expected'")


def clip_text(
    processor: Any,
    prompt: PromptSpec,
    item: Mapping[str, Any],
    video_settings: VideoSettings,
    mode: str,
    use_caption: bool,
) -> str:
    """The prompt text for one item (``item['video_url']``, optionally ``item['caption']``; a task's caption or rule in
    ``item['prompt_fields']`` fills the prompt's placeholders, :func:`recipe_lib.tasks.fill_prompt`)."""
    caption = item.get("caption") if use_caption else None
    fields = item.get("prompt_fields")
    if fields:
        from recipe_lib.tasks import fill_prompt

        tokenizer = getattr(processor, "tokenizer", processor)
        special = [*getattr(tokenizer, "all_special_tokens", ()), *getattr(tokenizer, "added_tokens_encoder", {})]
        prompt = fill_prompt(prompt, fields, special)
    return render_prompt(
        processor, prompt, str(item["video_url"]), video_settings, caption, answer_prefix=mode == "expected"
    )


# --------------------------------------------------------------------------------------------------------------------
# transformers: per-clip encoding and collation


def video_metadata(video: ModelVideo) -> dict[str, Any]:
    """Where the sampled frames lie in the clip, as Qwen3-VL's processor reads it (qwen-vl-utils' keys): the clip's
    fps and frame count and the index of each sampled frame; without known indices, the frames stand evenly for the
    clip at their sample fps."""
    frames = int(video.frames.shape[0])  # type: ignore[attr-defined]
    if video.indices is not None and len(video.indices) == frames and video.info.fps:
        fps, indices, total = float(video.info.fps), [int(i) for i in video.indices], int(video.info.frames)
    else:
        fps, indices, total = float(video.sample_fps), list(range(frames)), frames
    return {"fps": fps, "frames_indices": indices, "total_num_frames": total, "duration": total / fps}


def processor_video_kwargs(videos: Sequence[ModelVideo], processor: Any = None) -> dict[str, Any]:
    """Keyword arguments for the processor's video part: the frames are already sampled and sized, so the processor
    neither resizes nor (Qwen3-VL) samples them again; Qwen2.5-VL takes their fps, Qwen3-VL where they lie in the
    clip (``video_metadata``, for the timestamps in the prompt)."""
    if processor is not None and family_of_processor(processor) == QWEN3_VL:
        from transformers.video_utils import VideoMetadata

        metadata = [VideoMetadata(**video_metadata(v)) for v in videos]
        return {"video_metadata": metadata, "do_sample_frames": False, "do_resize": False}
    return {"fps": [float(v.sample_fps) for v in videos], "do_resize": False}


def encode_clip(processor: Any, text: str, video: ModelVideo, pixel_dtype: Any = None) -> dict[str, Any]:
    """Tokens and patches of one clip (batch of one), as the processor makes them; ``pixel_dtype`` casts the patches
    (to the vision tower's dtype, which the model would do on the device anyway). Qwen2.5-VL's encoding also holds
    ``second_per_grid_ts``; Qwen3-VL's has the timestamps in its tokens instead."""
    encoded = processor(
        text=[text],
        videos=[video.frames],
        **processor_video_kwargs([video], processor),
        padding=False,
        return_tensors="pt",
    )
    out = {k: encoded[k] for k in ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw")}
    if "second_per_grid_ts" in encoded:
        out["second_per_grid_ts"] = _as_tensor(encoded["second_per_grid_ts"])
    if pixel_dtype is not None and out["pixel_values_videos"].dtype != pixel_dtype:
        out["pixel_values_videos"] = out["pixel_values_videos"].to(pixel_dtype)
    return out


def context_length(model: Any) -> int | None:
    """The critic's context (max positions of its language model), or None when the config does not say."""
    config = getattr(model, "config", None)
    for part in (getattr(config, "text_config", None), config):
        value = getattr(part, "max_position_embeddings", None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_context(n_tokens: int, context: int | None, reserve: int, video: str) -> None:
    """A clip whose prompt (text + visual tokens, plus ``reserve`` answer tokens) does not fit the critic's context
    is skipped with the reason, never scored on a truncated or overflowing input."""
    if context is not None and n_tokens + reserve > context:
        from recipe_lib.errors import ClipError

        raise ClipError(
            f"prompt of {video} is {n_tokens} tokens (+{reserve} for the answer), more than the critic's context "
            f"of {context}",
            hint="shorten the caption, lower --fps / --max-pixels / --max-frames, or score without --use-caption",
        )


def _as_tensor(value: Any) -> Any:
    import torch

    return value if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=torch.float32)


def _cat(parts: list[Any], pin: bool) -> Any:
    import torch

    if not pin:
        return torch.cat(parts)
    shape = (sum(p.shape[0] for p in parts), *parts[0].shape[1:])
    out = torch.empty(shape, dtype=parts[0].dtype, pin_memory=True)
    return torch.cat(parts, out=out)


def collate(encoded: Sequence[Mapping[str, Any]], pad_id: int, pin_memory: bool = False) -> dict[str, Any]:
    """Left-pad and stack per-clip encodings into one batch, the layout the processor itself returns for a list.

    ``pin_memory`` stages every tensor in page-locked memory so the copy to the GPU can run without blocking.
    """
    import torch

    if not encoded:
        raise RecipeError("cannot collate an empty batch")
    width = max(e["input_ids"].shape[1] for e in encoded)
    ids, mask = [], []
    for e in encoded:
        pad = width - e["input_ids"].shape[1]
        ids.append(torch.nn.functional.pad(e["input_ids"], (pad, 0), value=pad_id))
        mask.append(torch.nn.functional.pad(e["attention_mask"], (pad, 0), value=0))
    batch = {"input_ids": _cat(ids, pin_memory), "attention_mask": _cat(mask, pin_memory)}
    for key in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts"):
        if key in encoded[0]:
            batch[key] = _cat([e[key] for e in encoded], pin_memory)
    return batch


def repeat_rows(batch: Mapping[str, Any], n: int) -> dict[str, Any]:
    """``batch`` with every row repeated ``n`` times in place (row-major: row 0 n times, then row 1 ...), each
    clip's patches and grid with it — what ``generate(num_return_sequences=n)`` does internally.

    Needed for Qwen3-VL critics: transformers 4.57's Qwen3-VL counts a video's ``<|vision_start|>`` tokens to split
    the batch for ``num_return_sequences``, but its prompt holds one per timestamped pair of frames, so asking it for
    several sequences fails; generating once over the repeated rows gives the same samples.
    """
    import torch

    if n == 1:
        return dict(batch)
    out: dict[str, Any] = {}
    for key in ("input_ids", "attention_mask", "video_grid_thw", "second_per_grid_ts"):
        if key in batch:
            out[key] = batch[key].repeat_interleave(n, dim=0)
    if "pixel_values_videos" in batch:
        sizes = batch["video_grid_thw"].prod(-1).tolist()
        chunks = torch.split(batch["pixel_values_videos"], sizes)
        out["pixel_values_videos"] = torch.cat([c for c in chunks for _ in range(n)])
    for key, value in batch.items():
        out.setdefault(key, value)
    return out


def to_device(batch: Mapping[str, Any], device: Any, non_blocking: bool = False) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=non_blocking) for k, v in batch.items()}


def clip_visual_tokens(video: ModelVideo) -> int:
    """Visual tokens of a sized clip (frames of shape (T, C, H, W))."""
    t, _, h, w = (int(x) for x in video.frames.shape)
    return visual_tokens(t, h, w)


# --------------------------------------------------------------------------------------------------------------------
# vLLM: inputs and sampling parameters


def vllm_input(text: str, video: ModelVideo, family: str | None = None) -> dict[str, Any]:
    """One vLLM prompt: the chat text, the sized frames as ``multi_modal_data`` — uint8 ``(T, H, W, 3)``, the layout
    vLLM's video parser takes, with heights and widths already multiples of the critic's patch factor (28, or 32 for
    Qwen3-VL) so its processor keeps them — and the processor keywords (no resizing).

    Qwen2.5-VL (default): the keywords carry the fps the frames stand for. Qwen3-VL (``family="qwen3-vl"``): the
    video is the pair (frames, metadata) that vLLM's Qwen3-VL processor takes for pre-sampled frames — the metadata
    (:func:`video_metadata`) gives the frame positions its timestamps come from — and frame sampling is off.
    """
    frames = video.frames.permute(0, 2, 3, 1).contiguous().numpy()  # type: ignore[attr-defined]
    if family == QWEN3_VL:
        return {
            "prompt": text,
            "multi_modal_data": {"video": (frames, video_metadata(video))},
            "mm_processor_kwargs": {"do_sample_frames": False, "do_resize": False},
        }
    return {
        "prompt": text,
        "multi_modal_data": {"video": frames},
        "mm_processor_kwargs": {"fps": float(video.sample_fps), "do_resize": False},
    }


def vllm_sampling_kwargs(
    sampling: SamplingSettings, mode: str, digit_ids: Sequence[int] | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``vllm.SamplingParams``.

    ``generate``: the recipe's sampling settings, ``n = trials`` answers per clip. ``expected``: one greedy token after
    the answer prefix with the log-probabilities of exactly the five digit tokens (``logprob_token_ids``, vLLM >= 0.20),
    from which p(1..5) is read — no digit can fall outside a top-k list.
    """
    check_mode(mode)
    if mode == "expected":
        if not digit_ids:
            raise RecipeError("expected mode needs the token ids of the digits 1-5")
        return {"max_tokens": 1, "temperature": 0.0, "logprob_token_ids": list(digit_ids), "seed": sampling.seed}
    if sampling.trials < 1:
        raise RecipeError(f"trials must be at least 1, got {sampling.trials}")
    kwargs: dict[str, Any] = {
        "n": sampling.trials,
        "max_tokens": sampling.max_new_tokens,
        "seed": sampling.seed,
        "repetition_penalty": sampling.repetition_penalty,
        "skip_special_tokens": True,
    }
    if sampling.temperature > 0:
        kwargs.update(temperature=sampling.temperature, top_k=sampling.top_k or -1, top_p=sampling.top_p)
    else:
        kwargs.update(temperature=0.0)
    return kwargs


# --------------------------------------------------------------------------------------------------------------------
# result rows (both backends)


def expected_row(probs: Sequence[float], digit_mass: float) -> dict[str, Any]:
    """The row of ``expected`` mode from p(1..5) (already renormalised) and the unnormalised digit mass."""
    p = [float(x) for x in probs]
    return {
        "score": SCORES[max(range(5), key=lambda k: p[k])],
        "expected_score": sum(s * q for s, q in zip(SCORES, p)),
        "probs": p,
        "digit_mass": float(digit_mass),
        "raw_output": None,
        "parse_error": None,
        "trials": [],
    }


class InvalidLogprobs(ValueError):
    """An answer token's log-probability that is no log-probability (NaN, infinite or above 0)."""


LOGPROB_SLACK = 1e-4  # rounding of an engine's log-softmax: log p may come out a hair above 0 for p = 1


def check_logprobs(logprobs: Mapping[Any, Any] | Iterable[tuple[Any, Any]]) -> None:
    """Raise :class:`InvalidLogprobs` unless every value (of a mapping, or of (token, value) pairs) is a finite number
    at most 0 (``-inf`` is p = 0, allowed)."""
    for token, value in logprobs.items() if isinstance(logprobs, Mapping) else logprobs:
        bad = isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value)
        if bad or value == math.inf or value > LOGPROB_SLACK:
            raise InvalidLogprobs(f"log-probability {value!r} of answer token {token!r} is not a number at most 0")


def row_from_logprobs(logprobs: Mapping[int, float], digit_ids: Sequence[int]) -> dict[str, Any]:
    """``expected`` row from log-probabilities of the answer token (token id -> log p over the whole vocabulary).

    With vLLM's ``logprob_token_ids`` every digit is present; from a top-k list (a served endpoint) a digit outside it
    counts as probability 0, and when none of 1-5 is among them the row has no score and says why. A log-probability
    that is not a number at most 0 (NaN, infinite, 1000.0) is no probability: :class:`InvalidLogprobs` (a
    ``ValueError``) names it, and the caller skips the clip rather than storing a row built on it.
    """
    check_logprobs(logprobs)
    mass = [math.exp(logprobs[d]) if d in logprobs else 0.0 for d in digit_ids]
    total = sum(mass)
    if total <= 0:
        return {
            "score": None,
            "expected_score": None,
            "probs": None,
            "digit_mass": 0.0,
            "raw_output": None,
            "parse_error": f"none of the digits 1-5 is among the {len(logprobs)} answer tokens returned",
            "trials": [],
        }
    return expected_row([m / total for m in mass], total)


def row_from_answer_logprobs(answers: Iterable[tuple[str, Any]], source: str) -> dict[str, Any]:
    """The ``expected`` row of an answer token's log-probabilities as a backend returned them: (token text, log p)
    pairs, every token it returned (a served endpoint's top-k list, vLLM's requested digit tokens and the sampled
    one). A token whose text is a digit 1-5 (spaces around it allowed) counts for that digit, the largest log p when
    several do.

    Every value is checked before any is used: a NaN, an infinity or a 1000.0 anywhere would otherwise drop out of the
    digits (leaving, say, p5 = 1.0) or swamp them, silently. Such an answer is a skip, ``{SKIP: "<source> holds an
    invalid log-probability: ..."}``: listed and counted with its reason, never stored, tried again on the next run."""
    pairs = [(str(token), value) for token, value in answers]
    try:
        check_logprobs(pairs)
    except InvalidLogprobs as exc:
        return {SKIP: f"{source} holds an invalid log-probability: {exc}"}
    by_digit: dict[int, float] = {}
    for token, value in pairs:
        text = token.strip()
        if text in DIGIT_TEXTS:
            by_digit[int(text)] = max(by_digit.get(int(text), -math.inf), float(value))
    row = row_from_logprobs(by_digit, SCORES)
    if not by_digit:
        row["parse_error"] = f"none of the digits 1-5 is among the {len(pairs)} answer tokens returned"
    return row


def generate_row(texts: Sequence[str], answer_format: str = "tagged") -> dict[str, Any]:
    """The row of ``generate`` mode from a clip's sampled answers, each parsed in ``answer_format`` (the prompt's):
    the most common parsed score (ties: the rounded mean of the parsed scores), their mean as ``expected_score``,
    every answer kept with its parse error."""
    trials = []
    for text in texts:
        parsed = parse_answer(text, answer_format=answer_format)
        trials.append({"text": text, "score": parsed.score, "error": parsed.error})
    scores = [t["score"] for t in trials if t["score"] is not None]
    if scores:
        counts = collections.Counter(scores).most_common()
        top = [v for v, c in counts if c == counts[0][1]]
        score = top[0] if len(top) == 1 else int(round(sum(scores) / len(scores)))
        expected = sum(scores) / len(scores)
    else:
        score, expected = None, None
    return {
        "score": score,
        "expected_score": expected,
        "probs": None,
        "digit_mass": None,
        "raw_output": trials[0]["text"] if trials else None,
        "parse_error": None if scores else (trials[0]["error"] if trials else "no output"),
        "trials": trials,
    }


# --------------------------------------------------------------------------------------------------------------------
# batch planning


def plan_batches(token_counts: Sequence[int], batch_size: int, max_batch_tokens: int | None = None) -> list[list[int]]:
    """Indices of ``token_counts`` grouped into batches of similar count.

    Clips are sorted by visual-token count (stable, so equal counts keep their order) and cut into batches of at most
    ``batch_size`` clips and, when given, at most ``max_batch_tokens`` visual tokens of padded work (largest count
    times clips; a clip larger than the budget gets a batch of its own). Left padding then costs little, and long
    clips automatically run in smaller batches than short ones.
    """
    if batch_size < 1:
        raise RecipeError(f"batch_size must be at least 1, got {batch_size}")
    if max_batch_tokens is not None and max_batch_tokens < 1:
        raise RecipeError(f"max_batch_tokens must be at least 1, got {max_batch_tokens}")
    order = sorted(range(len(token_counts)), key=lambda i: token_counts[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        widest = max([token_counts[j] for j in current] + [token_counts[i]])
        too_many = len(current) >= batch_size
        too_big = max_batch_tokens is not None and current and widest * (len(current) + 1) > max_batch_tokens
        if current and (too_many or too_big):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def estimate_visual_tokens(path: str | Path, settings: VideoSettings) -> int:
    """Visual tokens a clip will give the critic, from its container header (no frames decoded)."""
    from recipe_lib.video import probe, sample_indices, target_size

    info = probe(path)
    n = len(sample_indices(info.frames, info.fps, settings.fps, settings.max_frames))
    height, width = target_size(info.height, info.width, n, settings)
    return visual_tokens(n, height, width)


def batches_by_visual_tokens(
    entries: Sequence[Any],
    paths: Sequence[str | Path],
    settings: VideoSettings,
    batch_size: int,
    max_batch_tokens: int | None = None,
) -> list[list[Any]]:
    """``entries`` (anything, one per clip at ``paths``) cut into batches of similar visual-token count.

    Token counts come from each file's header (:func:`estimate_visual_tokens`); a clip whose header cannot be read
    counts as 0 tokens and lands in the first batches, where preparing it records the reason as a skip.
    """
    from recipe_lib.errors import VideoError

    if len(entries) != len(paths):
        raise RecipeError(f"{len(entries)} entries but {len(paths)} paths")
    counts = []
    for path in paths:
        try:
            counts.append(estimate_visual_tokens(path, settings))
        except (VideoError, OSError):
            counts.append(0)
    return [[entries[i] for i in batch] for batch in plan_batches(counts, batch_size, max_batch_tokens)]


@dataclasses.dataclass
class BatchPlan:
    """Batches (lists of item indices) and the padding they carry."""

    batches: list[list[int]]
    padded_tokens: int
    useful_tokens: int

    @property
    def padding_share(self) -> float:
        return 1 - self.useful_tokens / self.padded_tokens if self.padded_tokens else 0.0


def describe_plan(batches: list[list[int]], token_counts: Sequence[int]) -> BatchPlan:
    """Padded versus useful visual tokens of a batching (padding = every clip padded to its batch's largest)."""
    padded = sum(max(token_counts[i] for i in b) * len(b) for b in batches)
    useful = sum(token_counts[i] for b in batches for i in b)
    return BatchPlan(batches, padded, useful)
