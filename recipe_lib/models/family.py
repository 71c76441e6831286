"""Which critic family a model or processor belongs to, and what that changes for the rest of the code.

Two families of video-language critics run through the recipe book:

``qwen2.5-vl``  ``nvidia/Cosmos-Reason1-7B`` and the demo critic: 14-pixel patches merged 2x2, so frames are sized to
                multiples of 28; the processor takes the fps of the sampled frames (``second_per_grid_ts``).
``qwen3-vl``    ``nvidia/Cosmos-Reason2-8B`` (a Qwen3-VL-8B fine-tune) and the tiny Qwen3-VL critic: 16-pixel
                patches merged 2x2, so multiples of 32; the processor writes a timestamp before each pair of frames
                and needs the frames' positions in the clip (``video_metadata``) instead of an fps.

Everything here reads the model's configuration or the processor's class and sizes, never a model name, so a
fine-tuned checkpoint of either family is recognised the same way as its base model.
"""

from __future__ import annotations

from typing import Any

QWEN2_5_VL = "qwen2.5-vl"
QWEN3_VL = "qwen3-vl"
FAMILIES = (QWEN2_5_VL, QWEN3_VL)

# ``config.model_type`` of each family's checkpoints.
MODEL_TYPES = {"qwen2_5_vl": QWEN2_5_VL, "qwen3_vl": QWEN3_VL}

DEFAULT_PATCH_FACTOR = 28  # Qwen2.5-VL: patch 14 x spatial merge 2


def family_of_config(config: Any) -> str | None:
    """The family of a model configuration (``config.model_type``), or None for any other model."""
    return MODEL_TYPES.get(str(getattr(config, "model_type", "")))


def family_of_model(model: Any) -> str | None:
    """The family of a model (the base model under a PEFT wrapper), or None for any other model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return family_of_config(getattr(base, "config", None))


def family_of_processor(processor: Any) -> str:
    """The family a processor prepares inputs for: ``qwen3-vl`` for Qwen3-VL's video processor (which needs frame
    timestamps), ``qwen2.5-vl`` otherwise (the processors the recipe book has always used)."""
    video_processor = getattr(processor, "video_processor", None)
    name = type(video_processor).__name__ if video_processor is not None else ""
    return QWEN3_VL if name.startswith("Qwen3VL") else QWEN2_5_VL


def patch_factor(processor: Any) -> int:
    """Pixels per merged visual token along one side (patch size x spatial merge): frames handed to the processor
    unresized must be multiples of it (28 for Qwen2.5-VL, 32 for Qwen3-VL)."""
    video_processor = getattr(processor, "video_processor", None)
    patch = getattr(video_processor, "patch_size", None)
    merge = getattr(video_processor, "merge_size", None)
    if isinstance(patch, int) and isinstance(merge, int) and patch > 0 and merge > 0:
        return patch * merge
    return DEFAULT_PATCH_FACTOR
