"""Which speed-ups a scorer uses (:class:`Speedups`), and the Qwen2.5-VL model under a wrapper.

Part of :mod:`recipe_lib.inference.accel` (see its docstring).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from recipe_lib.errors import RecipeError

DECODE_ATTENTION = "recipe_gqa_decode"
# The vision tower's paths, each one switch on top of the one before ("auto": the device's default).
VISION_PATHS = ("auto", "stock", "batched", "packed", "fused", "compiled")
_CHECK_EVERY = 64  # decode steps between checks whether every sequence has finished


@dataclasses.dataclass
class Speedups:
    """Which speed-ups a scorer uses.

    ``batched_vision_attention``  one attention call per group of equal-length windows in the vision tower (with the
                 rotary embedding of queries and keys in one pass).
    ``padded_vision_mlp``  run the vision MLP with its hidden size padded by zeros to a multiple of 128 (3420 ->
                 3456 for the 7B), with gate and up projections in one matrix product.
    ``reuse_prefix``  compute the keys and values of the prompt text before the video once and reuse them for every
                 batch whose rows share it (unpadded batches).
    ``decoder``  ``hf`` (transformers' ``generate``), ``static`` (preallocated cache, device-side sampling) or
                 ``graph`` (``static`` with each decode step replayed as a CUDA graph; CUDA only).
    ``pin_memory``  stage the batch in page-locked memory and copy it to the GPU without blocking.
    ``linear_patch_embed``  the vision tower's patch embedding (a patch-sized ``Conv3d``) as one matrix product;
                 measured on CPUs only, so only :meth:`for_device` on a CPU turns it on.
    ``packed_vision_attention``  all chunks of a vision block in ONE attention call (padded, masked); Qwen2.5-VL and
                 Qwen3-VL. Supersedes ``batched_vision_attention`` where both are on.
    ``fused_vision_blocks``  each Qwen2.5-VL vision block as one function (packed attention, padded MLP, cached
                 weights); ``compile_vision`` also compiles it with ``torch.compile(backend=compile_backend)``.
    """

    batched_vision_attention: bool = True
    decoder: str = "hf"
    pin_memory: bool = False
    padded_vision_mlp: bool = False
    reuse_prefix: bool = False
    linear_patch_embed: bool = False
    packed_vision_attention: bool = False
    fused_vision_blocks: bool = False
    compile_vision: bool = False
    compile_backend: str = "inductor"

    def __post_init__(self) -> None:
        if self.decoder not in ("hf", "static", "graph"):
            raise RecipeError(f"unknown decoder '{self.decoder}'", hint="use 'hf', 'static' or 'graph'")
        if self.compile_vision and not self.fused_vision_blocks:
            raise RecipeError("compile_vision compiles the fused vision blocks", hint="turn fused_vision_blocks on too")

    @property
    def vision_compile_backend(self) -> str | None:
        """The torch.compile backend of the fused vision blocks, or None when they run eagerly."""
        return self.compile_backend if self.compile_vision else None

    @classmethod
    def none(cls) -> Speedups:
        """The stock transformers path."""
        return cls(batched_vision_attention=False, decoder="hf", pin_memory=False)

    @classmethod
    def all(cls, decoder: str = "graph") -> Speedups:
        return cls(True, decoder, pin_memory=True, padded_vision_mlp=True, reuse_prefix=True)

    @classmethod
    def for_device(cls, device: str, vision: str = "auto") -> Speedups:
        """What pays on ``device``, with the vision tower's path ``vision`` (one of :data:`VISION_PATHS`).

        On CUDA: graph decoding, pinned memory, the shared prefix, and for ``auto`` the fused vision blocks (eager:
        measured on one H100 on 2026-12-07 at 42.9 ms per 2 k clip against 208 ms for batched attention with the
        padded MLP, p(1..5) within 0.036 of the stock path; ``compiled`` reached 26.7 ms but compiles once per clip
        shape, 12 s each, so it is asked for, not the default). On CPU: the batched vision attention and the linear
        patch embedding; ``auto`` is ``batched``."""
        if vision not in VISION_PATHS:
            raise RecipeError(f"unknown vision path '{vision}'", hint=f"use one of {', '.join(VISION_PATHS)}")
        cuda = str(device).startswith("cuda")
        if vision == "auto":
            vision = "fused" if cuda else "batched"
        base = cls.all("graph") if cuda else cls(batched_vision_attention=True, decoder="hf", linear_patch_embed=True)
        steps = VISION_PATHS.index(vision)  # each path adds one switch to the one before it
        return dataclasses.replace(
            base,
            batched_vision_attention=steps >= 2,
            padded_vision_mlp=base.padded_vision_mlp and steps >= 2,
            packed_vision_attention=steps >= 3,
            fused_vision_blocks=steps >= 4,
            compile_vision=steps >= 5,
        )


def qwen_core(model: Any) -> Any:
    """The ``Qwen2_5_VLForConditionalGeneration`` inside ``model`` (itself, or the base model under a PEFT wrapper,
    whose layers carry the adapters), or None for any other model; the decoder and prefix reuse need its parts."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base if isinstance(base, Qwen2_5_VLForConditionalGeneration) else None
