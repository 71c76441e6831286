"""A tiny, randomly initialised Qwen3-VL critic built locally: the Cosmos-Reason2 path on a laptop CPU.

``nvidia/Cosmos-Reason2-8B`` is a Qwen3-VL-8B fine-tune. What differs from the Qwen2.5-VL demo critic, and what this
builder therefore makes real rather than imitates:

* :class:`transformers.Qwen3VLForConditionalGeneration` — a Qwen3 language model (per-head ``q_norm``/``k_norm``,
  an explicit ``head_dim``, interleaved multimodal RoPE) and a vision tower with 16-pixel patches, learned position
  embeddings interpolated to the frame size, and "deepstack" features of intermediate vision blocks added to the
  first language-model layers;
* :class:`transformers.Qwen3VLProcessor` with :class:`transformers.Qwen3VLVideoProcessor`: frames must be multiples
  of 32 pixels, and the prompt carries a ``<t seconds>`` timestamp before each pair of frames, computed from the
  frames' positions in the clip.

The tokenizer and chat template are the demo critic's (:mod:`recipe_lib.models.tiny`): the same byte-level BPE with
Qwen's chat and vision special tokens and single-token digits, so the answer digits 1-5 are single tokens here too.
The folder loads with ``AutoProcessor`` / ``AutoModelForImageTextToText`` like the real checkpoint.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from recipe_lib.models.tiny import (
    CHAT_TEMPLATE,
    MAX_PIXELS,
    TinyCriticConfig,
    _build_tokenizer,
    claim_folder,
    raise_failed_check,
    seeded_model,
    shared_text_config,
    shared_vision_config,
    special_token_ids,
    vision_token_ids,
    write_critic_folder,
)

# Qwen3-VL's per-frame pixel bounds for video (Qwen3VLVideoProcessor's class defaults, 128 to 768 tokens of 32x32).
VIDEO_MIN_PIXELS = 128 * 32 * 32
VIDEO_MAX_PIXELS = 768 * 32 * 32


@dataclasses.dataclass
class TinyQwen3Config:
    """Shape of the tiny Qwen3-VL critic (about 0.8 M parameters, like the Qwen2.5-VL demo critic)."""

    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 256
    max_position_embeddings: int = 4096
    rope_theta: float = 5_000_000.0
    # Interleaved multimodal RoPE over head_dim / 2 frequencies; Qwen3-VL-8B uses [24, 20, 20] of 64.
    mrope_section: list[int] = dataclasses.field(default_factory=lambda: [6, 5, 5])
    vision_depth: int = 2
    vision_hidden_size: int = 64
    vision_num_heads: int = 4
    vision_intermediate_size: int = 128
    patch_size: int = 16
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    # Learned position embeddings of the vision tower: a square grid (8 x 8) interpolated to each frame's patch grid.
    num_position_embeddings: int = 64
    # Vision blocks whose features are added to the first language-model layers (Qwen3-VL-8B: [8, 16, 24] of 27).
    deepstack_visual_indexes: list[int] = dataclasses.field(default_factory=lambda: [0])
    initializer_range: float = 0.08  # the demo critic's reason: a from-scratch tiny model learns with it
    bpe_vocab_size: int = 1536
    vocab_multiple: int = 64
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`RecipeError` for a shape the model cannot be built with."""
        side = int(round(self.num_position_embeddings**0.5))
        checks = [
            (
                self.num_attention_heads % self.num_key_value_heads == 0,
                "num_attention_heads must be a multiple of num_key_value_heads",
            ),
            (sum(self.mrope_section) == self.head_dim // 2, "mrope_section must sum to head_dim / 2"),
            (
                self.vision_hidden_size % self.vision_num_heads == 0,
                "vision_hidden_size must be divisible by vision_num_heads",
            ),
            (side * side == self.num_position_embeddings, "num_position_embeddings must be a square number"),
            (
                all(0 <= i < self.vision_depth for i in self.deepstack_visual_indexes),
                "deepstack_visual_indexes must index blocks of the vision tower (0 .. vision_depth - 1)",
            ),
            (
                len(self.deepstack_visual_indexes) <= self.num_hidden_layers,
                "more deepstack indexes than language model layers",
            ),
            (self.bpe_vocab_size >= 300, "bpe_vocab_size must be at least 300 (256 bytes plus some merges)"),
        ]
        raise_failed_check(self, "tiny Qwen3-VL critic", checks)


def build_processor(tokenizer: Any, patch_size: int = 16, merge_size: int = 2, temporal_patch_size: int = 2) -> Any:
    """A :class:`transformers.Qwen3VLProcessor` around ``tokenizer`` with Qwen3-VL's image and video processors."""
    from transformers import Qwen2VLImageProcessorFast, Qwen3VLProcessor, Qwen3VLVideoProcessor

    shape = {"patch_size": patch_size, "merge_size": merge_size, "temporal_patch_size": temporal_patch_size}
    half = [0.5, 0.5, 0.5]  # Qwen3-VL normalises pixels to [-1, 1]
    image_processor = Qwen2VLImageProcessorFast(
        size={"shortest_edge": 64 * 64, "longest_edge": MAX_PIXELS}, image_mean=half, image_std=half, **shape
    )
    video_processor = Qwen3VLVideoProcessor(
        size={"shortest_edge": VIDEO_MIN_PIXELS, "longest_edge": VIDEO_MAX_PIXELS},
        image_mean=half,
        image_std=half,
        **shape,
    )
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def _build_model(tokenizer: Any, cfg: TinyQwen3Config) -> Any:
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    ids = special_token_ids(tokenizer)
    text_config = {
        **shared_text_config(tokenizer, cfg, ids),
        "head_dim": cfg.head_dim,
        "rope_scaling": {"rope_type": "default", "mrope_section": list(cfg.mrope_section), "mrope_interleaved": True},
    }
    vision_config = {
        **shared_vision_config(cfg, hidden_act="gelu_pytorch_tanh"),
        "num_position_embeddings": cfg.num_position_embeddings,
        "deepstack_visual_indexes": list(cfg.deepstack_visual_indexes),
    }
    config = Qwen3VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        **vision_token_ids(ids),
        tie_word_embeddings=False,
    )
    return seeded_model(Qwen3VLForConditionalGeneration, config, cfg, ids)


def default_qwen3_dir() -> Path:
    """Where ``plausibility tiny-model --family qwen3-vl`` writes by default: beside the demo critic."""
    from recipe_lib.models.tiny import demo_model_dir

    return demo_model_dir().parent / "tiny-critic-qwen3-vl"


def build_tiny_qwen3_critic(out_dir: str | Path, cfg: TinyQwen3Config | None = None) -> Path:
    """Build the tiny Qwen3-VL critic into ``out_dir`` (replacing an earlier tiny critic there); deterministic for a
    given ``cfg``, written atomically like :func:`recipe_lib.models.tiny.build_tiny_critic`."""
    cfg = cfg or TinyQwen3Config()
    cfg.validate()
    out_dir = claim_folder(out_dir)
    tokenizer = _build_tokenizer(
        TinyCriticConfig(bpe_vocab_size=cfg.bpe_vocab_size, max_position_embeddings=cfg.max_position_embeddings)
    )
    processor = build_processor(tokenizer, cfg.patch_size, cfg.spatial_merge_size, cfg.temporal_patch_size)
    model = _build_model(tokenizer, cfg)
    marker = {
        "description": "tiny randomly initialised Qwen3-VL critic (the Cosmos-Reason2 family) for tests and demos",
        "family": "qwen3-vl",
        "config": dataclasses.asdict(cfg),
    }
    return write_critic_folder(out_dir, model, processor, marker)
