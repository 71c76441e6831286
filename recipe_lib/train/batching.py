"""Conversation samples to model inputs, shared by the SFT and GRPO trainers and their evaluations.

A sample is one row of a conversation dataset (:mod:`recipe_lib.data.conversations`): [system, user(video + text),
assistant?]. Its video part says how the clip is read (``fps``, ``total_pixels`` / ``max_pixels`` / ``min_pixels``);
``[custom.vision]`` keys of the training config override those for every sample.

Model inputs are built the way :mod:`recipe_lib.inference.hf` builds them at inference time: the prompt is the chat
template of [system, user] with the generation prompt, clips are decoded and sized by
:func:`recipe_lib.video.load_for_model` and passed as uint8 (T, C, H, W) tensors to the processor
(``do_resize=False``) with their fps — or, for a Qwen3-VL critic, their frame positions
(:func:`recipe_lib.inference.requests.processor_video_kwargs`). Clips are decoded before the model is loaded, on
Qwen2.5-VL's 28-pixel grid; for a Qwen3-VL critic the encoder resizes them to its 32-pixel grid
(:func:`recipe_lib.video.fit_to_factor`). Rows are padded on the left, so every row *ends* with its answer: the
trainers ask the model for the logits of the last K + 1 positions only (``logits_to_keep``) instead of the whole
sequence.

Answer-only labels: the target ids are the tokens of the assistant text followed by the end-of-turn marker the chat
template puts after an assistant turn (``<|im_end|>``), appended to the prompt ids — the same tokens the critic would
generate. Prompt and video tokens are never scored.

Decoding clips is the slow part on a CPU, so decoded clips are kept in a :class:`ClipCache` (bounded in bytes).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Any

from recipe_lib.config import VideoSettings
from recipe_lib.errors import DataError, RecipeError, VideoError
from recipe_lib.progress import progress_bar
from recipe_lib.video import ModelVideo, fit_to_factor, load_for_model

IGNORE_INDEX = -100
VIDEO_KEYS = ("fps", "total_pixels", "max_pixels", "min_pixels")


@dataclasses.dataclass(frozen=True)
class Sample:
    """One conversation, ready to encode."""

    index: int
    prompt_messages: list[dict[str, Any]]
    answer: str | None
    video: str
    video_settings: VideoSettings
    reference: int | None

    @property
    def key(self) -> tuple[str, tuple[Any, ...]]:
        s = self.video_settings
        return self.video, (s.fps, s.total_pixels, s.max_pixels, s.min_pixels, s.max_frames)


def _text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict) and p.get("type") == "text")


def video_settings_of(part: dict[str, Any], overrides: dict[str, Any] | None = None) -> VideoSettings:
    """The :class:`VideoSettings` a video message part describes (keys it leaves out stay unset)."""
    merged = {k: part.get(k) for k in VIDEO_KEYS}
    merged.update(overrides or {})
    if merged["fps"] is None:
        merged["fps"] = VideoSettings().fps
    return VideoSettings(
        fps=float(merged["fps"]),
        total_pixels=merged["total_pixels"],
        max_pixels=merged["max_pixels"],
        min_pixels=merged["min_pixels"],
    )


def parse_sample(
    messages: Any,
    index: int,
    reference: Any = None,
    require_answer: bool = True,
    vision_overrides: dict[str, Any] | None = None,
    base_dir: Path | None = None,
) -> Sample:
    """Check one decoded conversation and turn it into a :class:`Sample`; :class:`DataError` says what is wrong."""
    where = f"sample {index}"
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise DataError(f"{where}: the conversation is not a list of messages")
    roles = [m.get("role") for m in messages]
    if require_answer:
        if not roles or roles[-1] != "assistant":
            raise DataError(
                f"{where}: the conversation has no assistant answer to learn", hint="build it with kind 'sft'"
            )
        answer = _text_of(messages[-1]).strip()
        if not answer:
            raise DataError(f"{where}: the assistant answer is empty")
        prompt = messages[:-1]
    else:
        answer = None
        prompt = messages[:-1] if roles and roles[-1] == "assistant" else messages
    videos = [
        part
        for m in prompt
        if m.get("role") == "user" and isinstance(m.get("content"), list)
        for part in m["content"]
        if isinstance(part, dict) and part.get("type") == "video"
    ]
    if len(videos) != 1:
        raise DataError(f"{where}: expected exactly one video in the user message, found {len(videos)}")
    video = str(videos[0].get("video") or "")
    if not video:
        raise DataError(f"{where}: the video part names no file")
    path = Path(video)
    if not path.is_absolute() and base_dir is not None and not path.exists() and (base_dir / path).exists():
        video = str(base_dir / path)
    ref = None
    if reference is not None:
        from recipe_lib.train.rewards import reference_score

        ref = reference_score(reference)
    return Sample(index, prompt, answer, video, video_settings_of(videos[0], vision_overrides), ref)


def load_samples(
    dataset: Any,
    require_answer: bool = True,
    column: str = "conversations",
    vision_overrides: dict[str, Any] | None = None,
) -> tuple[list[Sample], list[dict[str, Any]]]:
    """All samples of a conversation dataset (a folder or a ``datasets.Dataset``) and the rows left out, with reasons.

    The label (``reference``, else ``pc``) rides along for rewards and evaluation.
    """
    from recipe_lib.data.conversations import load_conversations

    base_dir = None
    if isinstance(dataset, str | Path):
        base_dir = Path(dataset)
        if column == "conversations":
            dataset = load_conversations(dataset)
        else:
            import datasets

            if not base_dir.exists():
                raise DataError(f"conversation dataset not found: {base_dir}")
            dataset = datasets.load_from_disk(str(base_dir))
    if column not in dataset.column_names:
        raise DataError(
            f"the dataset has no '{column}' column",
            hint=f"columns: {', '.join(dataset.column_names)}; set train.train_policy.conversation_column_name",
        )
    label_col = "reference" if "reference" in dataset.column_names else ("pc" if "pc" in dataset.column_names else None)
    samples: list[Sample] = []
    skipped: list[dict[str, Any]] = []
    for i, row in enumerate(dataset):
        raw = row[column]
        try:
            messages = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError as exc:
            skipped.append({"index": i, "reason": f"conversation is not valid JSON ({exc.msg})"})
            continue
        try:
            samples.append(
                parse_sample(
                    messages,
                    i,
                    row.get(label_col) if label_col else None,
                    require_answer,
                    vision_overrides,
                    base_dir,
                )
            )
        except DataError as exc:
            skipped.append({"index": i, "reason": exc.message})
    if not samples:
        first = skipped[0]["reason"] if skipped else "the dataset is empty"
        raise DataError(f"no usable samples in the dataset ({len(skipped)} left out; first: {first})")
    return samples, skipped


def samples_digest(samples: list[Sample]) -> str:
    """A short content hash of samples (prompts, answers, videos, sampling keys, labels)."""
    import hashlib

    h = hashlib.sha256()
    for s in samples:
        record = [s.prompt_messages, s.answer, s.video, dataclasses.asdict(s.video_settings), s.reference]
        h.update(json.dumps(record, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


class ClipCache:
    """Decoded, sized clips kept in memory (up to ``max_bytes``), decoded on worker threads when missing."""

    def __init__(self, max_bytes: int = 2 << 30, workers: int = 2) -> None:
        self.max_bytes = max_bytes
        self.workers = max(1, workers)
        self._clips: dict[Any, ModelVideo] = {}
        self._errors: dict[Any, str] = {}
        self.bytes = 0
        self.decoded = 0

    def __len__(self) -> int:
        return len(self._clips)

    def _load(self, sample: Sample) -> ModelVideo:
        clip = load_for_model(sample.video, sample.video_settings)
        self.decoded += 1
        size = clip.frames.numel() * clip.frames.element_size()
        if self.bytes + size <= self.max_bytes:
            self._clips[sample.key] = clip
            self.bytes += size
        return clip

    def get(self, sample: Sample) -> ModelVideo:
        """The clip of ``sample``; :class:`VideoError` when it cannot be read (remembered, not retried)."""
        if sample.key in self._clips:
            return self._clips[sample.key]
        if sample.key in self._errors:
            raise VideoError(self._errors[sample.key])
        try:
            return self._load(sample)
        except VideoError as exc:
            self._errors[sample.key] = exc.message
            raise

    def fetch(self, samples: list[Sample]) -> tuple[list[Sample], list[ModelVideo], list[dict[str, Any]]]:
        """Clips for ``samples`` (decoding missing ones in parallel); unreadable ones are returned as skips."""
        missing = [s for s in samples if s.key not in self._clips and s.key not in self._errors]
        if len(missing) > 1:
            with cf.ThreadPoolExecutor(self.workers) as pool:
                list(pool.map(self._try, missing))
        kept, clips, skipped = [], [], []
        for s in samples:
            try:
                clips.append(self.get(s))
                kept.append(s)
            except VideoError as exc:
                skipped.append({"index": s.index, "video": s.video, "reason": exc.message})
        return kept, clips, skipped

    def _try(self, sample: Sample) -> None:
        with contextlib.suppress(VideoError):
            self.get(sample)

    def warm(self, samples: list[Sample], progress: bool = False) -> list[dict[str, Any]]:
        """Decode every clip up front (while it fits the budget); returns the unreadable ones as skips."""
        skipped: list[dict[str, Any]] = []
        seen: set[Any] = set()
        unique = [s for s in samples if not (s.key in seen or seen.add(s.key))]
        with cf.ThreadPoolExecutor(self.workers) as pool:
            futures = {pool.submit(self.get, s): s for s in unique}
            done = cf.as_completed(futures)
            for fut in progress_bar(done, total=len(futures), desc="decoding clips", enabled=progress):
                s = futures[fut]
                try:
                    fut.result()
                except VideoError as exc:
                    skipped.append({"index": s.index, "video": s.video, "reason": exc.message})
        return skipped


class Encoder:
    """Turns samples (and their clips) into padded model inputs with a processor (see the module docstring).

    Each prompt is encoded on its own (:func:`recipe_lib.inference.requests.encode_clip`, the inference path) and the
    batch is collated from those (:func:`recipe_lib.inference.requests.collate`: the layout the processor returns for
    a list). The encodings of the first ``memo_bytes`` worth of prompts are kept, keyed by clip, its sampling and the
    prompt text, so a training run encodes each of them once rather than at every step that draws it (GRPO needs a
    step's prompts n + 1 times: once to sample the group, n times for the policy pass over its n completions).
    """

    def __init__(self, processor: Any, memo_bytes: int = 0) -> None:
        from recipe_lib.models.family import family_of_processor, patch_factor

        self.processor = processor
        self.memo_bytes = memo_bytes
        self.memo_used = 0
        self.encoded = 0  # prompts run through the processor (memo misses)
        self._memo: dict[Any, dict[str, Any]] = {}
        self.family = family_of_processor(processor)
        self.patch_factor = patch_factor(processor)
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        if pad is None:
            raise RecipeError("the tokenizer has neither a pad nor an end-of-sequence token")
        self.pad_id = int(pad)
        self.end_text = self._end_of_turn()
        self.end_ids = self.tokenizer.encode(self.end_text, add_special_tokens=False)

    def _end_of_turn(self) -> str:
        """What the chat template writes right after an assistant's text (``<|im_end|>`` for Qwen)."""
        probe = "7"
        messages = [
            {"role": "user", "content": [{"type": "text", "text": "q"}]},
            {"role": "assistant", "content": [{"type": "text", "text": probe}]},
        ]
        full = self.processor.apply_chat_template(messages, tokenize=False)
        tail = full[full.rfind(probe) + len(probe) :]
        stripped = tail.rstrip()
        if not stripped:
            eos = self.tokenizer.eos_token
            if not eos:
                raise RecipeError("cannot tell how the chat template ends an assistant turn")
            return eos
        return stripped

    def prompt_text(self, sample: Sample, answer_prefix: str = "") -> str:
        text = self.processor.apply_chat_template(sample.prompt_messages, tokenize=False, add_generation_prompt=True)
        return text + answer_prefix

    def answer_ids(self, answer: str) -> list[int]:
        return self.tokenizer.encode(answer, add_special_tokens=False) + list(self.end_ids)

    def encode_prompts(self, samples: list[Sample], clips: list[ModelVideo], answer_prefix: str = "") -> Any:
        """Left-padded prompt inputs (a dict of tensors in the processor's layout), as inference builds them."""
        from recipe_lib.inference.requests import collate

        if len(samples) != len(clips):
            raise ValueError(f"{len(samples)} samples but {len(clips)} clips")
        return collate([self._encode_one(s, c, answer_prefix) for s, c in zip(samples, clips)], self.pad_id)

    def _encode_one(self, sample: Sample, clip: ModelVideo, answer_prefix: str) -> dict[str, Any]:
        from recipe_lib.inference.requests import encode_clip

        text = self.prompt_text(sample, answer_prefix)
        key = (sample.key, text)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        encoded = encode_clip(self.processor, text, fit_to_factor(clip, self.patch_factor))
        self.encoded += 1
        size = sum(v.numel() * v.element_size() for v in encoded.values())
        if self.memo_used + size <= self.memo_bytes:
            self._memo[key] = encoded
            self.memo_used += size
        return encoded

    def append(self, prompts: Any, continuations: list[list[int]]) -> tuple[dict[str, Any], Any, Any]:
        """Prompt inputs with ``continuations[i]`` appended to row i, re-padded on the left.

        Returns (model inputs, target ids (B, K) right-aligned and padded with -100, their mask (B, K)); K is the
        longest continuation, so the model needs the logits of the last K + 1 positions.
        """
        import torch

        ids, mask = prompts["input_ids"], prompts["attention_mask"]
        rows = [row[m.bool()] for row, m in zip(ids, mask)]
        if len(continuations) != len(rows):
            raise ValueError(f"{len(rows)} prompts but {len(continuations)} continuations")
        k = max(1, max(len(c) for c in continuations))
        full = [torch.cat([r, torch.tensor(c, dtype=r.dtype)]) for r, c in zip(rows, continuations)]
        length = max(len(f) for f in full)
        input_ids = torch.full((len(full), length), self.pad_id, dtype=ids.dtype)
        attention = torch.zeros((len(full), length), dtype=mask.dtype)
        targets = torch.full((len(full), k), IGNORE_INDEX, dtype=torch.long)
        for i, (f, c) in enumerate(zip(full, continuations)):
            input_ids[i, length - len(f) :] = f
            attention[i, length - len(f) :] = 1
            if c:
                targets[i, k - len(c) :] = torch.tensor(c, dtype=torch.long)
        inputs = {key: value for key, value in prompts.items() if key not in ("input_ids", "attention_mask")}
        inputs["input_ids"] = input_ids
        inputs["attention_mask"] = attention
        return inputs, targets, targets != IGNORE_INDEX

    def encode_sft(self, samples: list[Sample], clips: list[ModelVideo]) -> tuple[dict[str, Any], Any, Any]:
        """Inputs with each sample's answer appended; targets are the answer tokens only."""
        answers = []
        for s in samples:
            if s.answer is None:
                raise DataError(f"sample {s.index} has no assistant answer")
            answers.append(self.answer_ids(s.answer))
        return self.append(self.encode_prompts(samples, clips), answers)


def to_device(inputs: dict[str, Any], device: str, dtype: Any = None) -> dict[str, Any]:
    """Move tensors to ``device``; floating point pixel values take the model's dtype."""
    out = {}
    for key, value in inputs.items():
        if hasattr(value, "to"):
            value = value.to(device)
            if dtype is not None and key.startswith("pixel_values"):
                value = value.to(dtype)
        out[key] = value
    return out


def token_logprobs(model: Any, inputs: dict[str, Any], targets: Any, temperature: float = 1.0) -> Any:
    """log p(target token) at each of the last K positions (K = targets.shape[1]) with logits divided by
    ``temperature``; padded positions hold 0. Only the last K + 1 positions are projected to the vocabulary.
    """
    import torch

    k = targets.shape[1]
    out = model(**inputs, use_cache=False, logits_to_keep=k + 1)
    logits = out.logits[:, :-1, :].float()
    if temperature != 1.0:
        logits = logits / temperature
    logp = torch.log_softmax(logits, dim=-1)
    safe = targets.clamp_min(0).to(logp.device)
    picked = logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return picked.masked_fill((targets == IGNORE_INDEX).to(logp.device), 0.0)
