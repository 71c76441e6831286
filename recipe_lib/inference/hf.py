"""Score clips with transformers (CPU or GPU), in two modes.

``generate``  sample the critic's answer ``trials`` times (seeded) and parse each; the clip's score is the most common
              parsed score, ``expected_score`` their mean.
``expected``  one forward pass on the prompt followed by the prompt file's answer prefix (``<answer>\\n``, or
              nothing for a critic that answers with the digit first); the next-token
              distribution over the digits 1-5 gives p(1..5) (renormalised), the probability-weighted
              ``expected_score`` and the argmax ``score``. ``digit_mass`` is the unnormalised probability of any digit
              1-5, a check that the critic really is about to answer.

All CPU work for a clip happens in :meth:`HFScorer.prepare` (decode, size, render the prompt, and run the processor:
tokens and normalised patches), which scoring runs on worker threads one batch ahead; :meth:`HFScorer.score_batch`
only collates, copies to the device and runs the model. The speed-ups in :mod:`recipe_lib.inference.accel` are
chosen by ``speedups`` (default: everything that pays on the critic's device); they patch Qwen2.5-VL's modules, so a
Qwen3-VL critic (Cosmos-Reason2) runs transformers' stock path, whatever ``speedups`` asks for, but for the packed
vision attention, which knows both families. ``ScoreConfig.precision == "fp8"`` converts the critic's linear layers to
float8 when :meth:`HFScorer.from_config` loads it (:func:`recipe_lib.inference.accel.apply_float8`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from recipe_lib.config import SamplingSettings, VideoSettings
from recipe_lib.inference.accel import (
    PhaseTimer,
    PrefixReuse,
    SamplerSettings,
    Speedups,
    StaticDecoder,
    apply_float8,
    batched_vision_attention,
    check_float8_device,
    fused_vision_blocks,
    generated_lengths,
    linear_patch_embed,
    packed_vision_attention,
    padded_vision_mlp,
    qwen_core,
)
from recipe_lib.inference.requests import (
    SCORES,
    check_context,
    check_mode,
    clip_text,
    clip_visual_tokens,
    collate,
    context_length,
    digit_token_ids,
    encode_clip,
    expected_row,
    generate_row,
    render_prompt,
    repeat_rows,
    to_device,
)
from recipe_lib.models.family import QWEN3_VL, family_of_processor, patch_factor
from recipe_lib.prompts import PromptSpec
from recipe_lib.video import ModelVideo, fit_to_factor, load_for_model

if TYPE_CHECKING:
    from recipe_lib.inference.score_config import ScoreConfig

__all__ = ["SCORES", "HFScorer", "Prepared", "digit_token_ids", "render_prompt"]


@dataclasses.dataclass
class Prepared:
    """One clip after CPU-side work: messages rendered, frames decoded and sized, and (when prepared by a scorer)
    the processor's tokens and patches for it (or, for a served endpoint, the request body)."""

    item: dict[str, Any]
    text: str
    video: ModelVideo
    preprocess_s: float
    encoded: dict[str, Any] | None = None

    @property
    def visual_tokens(self) -> int:
        return clip_visual_tokens(self.video)


def _visual_dtype(model: Any) -> Any:
    """The vision tower's dtype (patches are cast to it on the host), or None when the model has no tower."""
    visual = getattr(model, "visual", None)
    try:
        return next(visual.parameters()).dtype if visual is not None else None
    except StopIteration:
        return None


class HFScorer:
    """Batched scoring with a loaded critic (``recipe_lib.models.loading.LoadedCritic``)."""

    @classmethod
    def from_config(cls, cfg: ScoreConfig, prompt: PromptSpec) -> HFScorer:
        """The critic ``cfg.model`` loaded on ``cfg.device`` in ``cfg.dtype``, with the run's settings; with
        ``cfg.precision == "fp8"`` its linear layers are converted to float8 (checked before loading)."""
        from recipe_lib.models.loading import load_critic, resolve_device

        if cfg.precision == "fp8":
            check_float8_device(resolve_device(cfg.device))
        critic = load_critic(cfg.model, device=cfg.device, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
        if cfg.precision == "fp8":
            apply_float8(critic.model)
        speedups = Speedups.for_device(str(critic.device), cfg.vision_path)
        return cls(
            critic, prompt, cfg.video, cfg.sampling, mode=cfg.mode, use_caption=cfg.use_caption, speedups=speedups
        )

    def __init__(
        self,
        critic: Any,
        prompt: PromptSpec,
        video_settings: VideoSettings,
        sampling: SamplingSettings,
        mode: str = "expected",
        use_caption: bool = False,
        speedups: Speedups | None = None,
    ) -> None:
        check_mode(mode)
        prompt.require(mode)  # the prompt's answer_prefix (expected) or answer_format (generate)
        self.critic = critic
        self.model = critic.model
        self.processor = critic.processor
        self.processor.tokenizer.padding_side = "left"
        self.prompt = prompt
        self.video_settings = video_settings
        self.sampling = sampling
        self.mode = mode
        self.use_caption = use_caption
        self.speedups = speedups if speedups is not None else Speedups.for_device(str(critic.device))
        self.family = family_of_processor(self.processor)
        self.patch_factor = patch_factor(self.processor)
        self._core = qwen_core(self.model)
        if self._core is None:
            # Not a Qwen2.5-VL model (a Qwen3-VL critic, say): the accel patches target Qwen2.5-VL's modules, so only
            # what needs transformers' public interface alone is kept.
            # Packed vision attention also knows Qwen3-VL's vision attention.
            self.speedups = dataclasses.replace(
                self.speedups,
                batched_vision_attention=False,
                padded_vision_mlp=False,
                reuse_prefix=False,
                decoder="hf",
                fused_vision_blocks=False,
                compile_vision=False,
            )
        self.digit_ids = digit_token_ids(self.processor.tokenizer) if mode == "expected" else None
        self.pixel_dtype = _visual_dtype(self._core or self.model)
        self.context = context_length(self.model)
        self.profile = False  # set True to record a per-phase breakdown of each batch in ``last_timing``
        self.last_timing: dict[str, float] = {}
        self.tokens_generated = 0  # running count of answer tokens produced in generate mode (end token included)
        self._decoder: StaticDecoder | None = None
        self._prefix = PrefixReuse(self._core) if self.speedups.reuse_prefix else None

    def prepare(self, item: dict[str, Any]) -> Prepared:
        """CPU work for one clip (safe to run in a worker thread)."""
        start = time.perf_counter()
        video = load_for_model(item["video_url"], self.video_settings, self.patch_factor)
        return self.prepare_video(item, video, start)

    def prepare_video(self, item: dict[str, Any], video: ModelVideo, start: float | None = None) -> Prepared:
        """CPU work for a clip whose frames are already sampled and sized (``item['video_url']`` names it in the
        prompt); ``start`` is when its preparation began (for the recorded preprocess time)."""
        start = time.perf_counter() if start is None else start
        video = fit_to_factor(video, self.patch_factor)  # frames sized for another family (a Ray decode task)
        text = clip_text(self.processor, self.prompt, item, self.video_settings, self.mode, self.use_caption)
        encoded = encode_clip(self.processor, text, video, self.pixel_dtype)
        reserve = 1 if self.mode == "expected" else self.sampling.max_new_tokens
        check_context(int(encoded["input_ids"].shape[1]), self.context, reserve, str(item["video_url"]))
        return Prepared(item=item, text=text, video=video, preprocess_s=time.perf_counter() - start, encoded=encoded)

    def _inputs(self, batch: list[Prepared]) -> dict[str, Any]:
        def encode(p: Prepared) -> dict[str, Any]:
            video = fit_to_factor(p.video, self.patch_factor)  # clips decoded for another grid (held-out scoring)
            return encode_clip(self.processor, p.text, video, self.pixel_dtype)

        encoded = [p.encoded or encode(p) for p in batch]
        on_cuda = self.model.device.type == "cuda"
        pin = self.speedups.pin_memory and on_cuda
        host = collate(encoded, self.processor.tokenizer.pad_token_id, pin_memory=pin)
        return to_device(host, self.model.device, non_blocking=pin)

    def score_batch(self, batch: list[Prepared]) -> list[dict[str, Any]]:
        import torch

        start = time.perf_counter()
        timer = PhaseTimer(self._core or self.model) if self.profile else None
        sp = self.speedups
        with (
            torch.inference_mode(),
            batched_vision_attention(self.model, sp.batched_vision_attention),
            padded_vision_mlp(self.model, sp.padded_vision_mlp),
            linear_patch_embed(self.model, sp.linear_patch_embed),
            packed_vision_attention(self.model, sp.packed_vision_attention),
            fused_vision_blocks(self.model, sp.fused_vision_blocks, sp.vision_compile_backend),
        ):
            inputs = self._inputs(batch)
            collated = time.perf_counter()
            if timer is not None:
                with timer:
                    rows = self._expected(inputs) if self.mode == "expected" else self._generate(batch, inputs)
            else:
                rows = self._expected(inputs) if self.mode == "expected" else self._generate(batch, inputs)
        elapsed = time.perf_counter() - start
        if timer is not None:
            self.last_timing.update(
                collate_s=collated - start,
                vision_s=timer.vision_s,
                prefill_s=timer.lm_first_s,
                model_s=elapsed,
            )
            if self.mode == "expected":
                self.last_timing.update(decode_s=0.0, new_tokens=0)
            elif self._decoder is None or self.speedups.decoder == "hf":
                rest = elapsed - (collated - start) - timer.vision_s - timer.lm_first_s
                self.last_timing["decode_s"] = max(0.0, rest)
        for p, row in zip(batch, rows):
            row["timing"] = {"preprocess_s": round(p.preprocess_s, 4), "model_s": round(elapsed / len(batch), 4)}
            row["frames"] = int(p.video.frames.shape[0])
            row["frame_size"] = [int(p.video.frames.shape[2]), int(p.video.frames.shape[3])]
        return rows

    def _expected(self, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        import torch

        if self._prefix is not None:
            out = self._prefix.forward(inputs)
        else:
            out = self.model(**inputs, use_cache=False, logits_to_keep=1)
        logits = out.logits[:, -1, :].float()
        full = torch.softmax(logits, dim=-1)
        digits = full[:, self.digit_ids]
        mass = digits.sum(-1)
        probs = (digits / mass.clamp_min(1e-30).unsqueeze(-1)).tolist()
        return [expected_row(p, m) for p, m in zip(probs, mass.tolist())]

    def _eos_ids(self) -> list[int]:
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        if eos is None:
            eos = self.processor.tokenizer.eos_token_id
        return list(eos) if isinstance(eos, list | tuple) else [eos]

    def _generate(self, batch: list[Prepared], inputs: dict[str, Any]) -> list[dict[str, Any]]:
        import torch

        s = self.sampling
        torch.manual_seed(s.seed)
        tok = self.processor.tokenizer
        if self.speedups.decoder == "hf":
            new = self._hf_generate(inputs)
            lengths = generated_lengths(new, self._eos_ids(), new.shape[1])
        else:
            if self._decoder is None:
                self._decoder = StaticDecoder(
                    self._core,
                    tok.pad_token_id,
                    self._eos_ids(),
                    use_graph=self.speedups.decoder == "graph",
                    prefix=self._prefix,
                )
            sampler = SamplerSettings(
                temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, repetition_penalty=s.repetition_penalty
            )
            result = self._decoder.generate(inputs, sampler, s.max_new_tokens, trials=s.trials)
            new, lengths = result.tokens, result.lengths
            if self.profile:
                self.last_timing["decode_s"] = result.decode_s
        self.tokens_generated += sum(lengths)
        if self.profile:
            self.last_timing["new_tokens"] = sum(lengths)
        texts = tok.batch_decode(new, skip_special_tokens=True)
        fmt = self.prompt.parse_format()
        return [generate_row(texts[i * s.trials : (i + 1) * s.trials], fmt) for i in range(len(batch))]

    def _hf_generate(self, inputs: dict[str, Any]) -> Any:
        s = self.sampling
        kwargs: dict[str, Any] = {"max_new_tokens": s.max_new_tokens, "num_return_sequences": s.trials}
        if s.temperature > 0:
            kwargs.update(
                do_sample=True,
                temperature=s.temperature,
                top_k=s.top_k,
                top_p=s.top_p,
                repetition_penalty=s.repetition_penalty,
            )
        else:
            kwargs.update(do_sample=False, repetition_penalty=s.repetition_penalty)
        if self.family == QWEN3_VL and s.trials > 1:
            inputs = repeat_rows(inputs, s.trials)  # see repeat_rows: Qwen3-VL cannot return several sequences
            kwargs["num_return_sequences"] = 1
        tok = self.processor.tokenizer
        out = self.model.generate(**inputs, **kwargs, pad_token_id=tok.pad_token_id)
        return out[:, inputs["input_ids"].shape[1] :]
