"""Real critic architectures built from their configuration with random weights (no download).

Speed does not depend on the weights' values, so the benchmark measures the architecture of
``nvidia/Cosmos-Reason1-7B`` (a Qwen2.5-VL-7B-Instruct fine-tune, same shapes) with random weights on a GPU machine
that cannot reach the hub. The shapes below are those of Qwen2.5-VL-7B-Instruct's published ``config.json``, and of
Qwen3-VL-8B-Instruct's for ``nvidia/Cosmos-Reason2-8B`` (a Qwen3-VL-8B fine-tune).

The tokenizer and processor come from a local critic folder (by default the demo critic, or the tiny Qwen3-VL critic
for a Qwen3-VL architecture): its processor sizes and normalises video exactly like the real one (14-pixel patches
for Qwen2.5-VL, 16 for Qwen3-VL, 2x2 merge, temporal patch 2), and its
special-token ids are written into the configuration, so the model finds the video placeholders. Its vocabulary is
smaller than the model's 152 064 rows; ids past the tokenizer's end are simply never fed (and decode to nothing).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from recipe_lib.errors import RecipeError

# Qwen2.5-VL-7B-Instruct (config.json), which Cosmos-Reason1-7B shares.
QWEN2_5_VL_7B: dict[str, Any] = {
    "model_type": "qwen2_5_vl",
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "hidden_act": "silu",
    "max_position_embeddings": 128000,
    "max_window_layers": 28,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "sliding_window": 32768,
    "use_sliding_window": False,
    "tie_word_embeddings": False,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "use_cache": True,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "pad_token_id": 151643,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_config": {
        "depth": 32,
        "hidden_act": "silu",
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_chans": 3,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
    },
}

# Qwen3-VL-8B-Instruct (config.json), whose shape Cosmos-Reason2-8B shares. The text model is Qwen3-8B's (36 layers
# of 4096, 12288-wide MLP, 32 query / 8 key-value heads of 128, rope theta 5e6, interleaved M-RoPE [24, 20, 20],
# 262144 positions); the vision tower has 27 blocks of 1152 (MLP 4304, 16 heads, 16-pixel patches, 48 x 48 learned
# position grid) with deepstack features from blocks 8, 16 and 24. transformers' Qwen3VLConfig defaults describe the
# 4B model, so every size is written out. Counted on the meta device: 8.77 B parameters (the published 8.77 B).
QWEN3_VL_8B: dict[str, Any] = {
    "model_type": "qwen3_vl",
    "architectures": ["Qwen3VLForConditionalGeneration"],
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "tie_word_embeddings": False,
    "text_config": {
        "vocab_size": 151936,
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "hidden_act": "silu",
        "max_position_embeddings": 262144,
        "rms_norm_eps": 1e-06,
        "rope_theta": 5000000.0,
        "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": False,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
    "vision_config": {
        "depth": 27,
        "hidden_size": 1152,
        "hidden_act": "gelu_pytorch_tanh",
        "intermediate_size": 4304,
        "num_heads": 16,
        "in_channels": 3,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": 4096,
        "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [8, 16, 24],
        "initializer_range": 0.02,
    },
}

ARCHITECTURES: dict[str, dict[str, Any]] = {"qwen2.5-vl-7b": QWEN2_5_VL_7B, "qwen3-vl-8b": QWEN3_VL_8B}

# Configuration keys that name special tokens, and the tokenizer token each one is.
_TOKEN_KEYS = {
    "bos_token_id": "<|endoftext|>",
    "pad_token_id": "<|endoftext|>",
    "eos_token_id": "<|im_end|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
    "vision_token_id": "<|vision_pad|>",
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
}


def architecture_names() -> list[str]:
    return sorted(ARCHITECTURES)


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if key not in out:
            raise RecipeError(f"unknown architecture key '{key}'", hint=f"known keys: {', '.join(sorted(out))}")
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out[key], dict) else value
    return out


def family_of_architecture(name: str) -> str:
    """``qwen2.5-vl`` or ``qwen3-vl``: the family of a known architecture."""
    from recipe_lib.models.family import MODEL_TYPES

    if name not in ARCHITECTURES:
        raise RecipeError(f"unknown architecture '{name}'", hint=f"use one of: {', '.join(architecture_names())}")
    return MODEL_TYPES[ARCHITECTURES[name]["model_type"]]


def _classes(name: str) -> tuple[Any, Any]:
    """(config class, model class) of architecture ``name``."""
    import transformers

    if family_of_architecture(name) == "qwen3-vl":
        return transformers.Qwen3VLConfig, transformers.Qwen3VLForConditionalGeneration
    return transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLForConditionalGeneration


def _token_id(tokenizer: Any, token: str, vocab_size: int, family: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise RecipeError(
            f"the tokenizer has no {token} token, so it cannot drive a {family} model",
            hint="use the tiny critic's folder or a checkpoint of that family for the tokenizer",
        )
    if token_id >= vocab_size:
        raise RecipeError(f"token {token} has id {token_id}, past the vocabulary of {vocab_size}")
    return int(token_id)


def architecture_config(
    name: str,
    tokenizer: Any | None = None,
    attn_implementation: str = "sdpa",
    overrides: dict[str, Any] | None = None,
) -> Any:
    """The configuration (``Qwen2_5_VLConfig`` or ``Qwen3VLConfig``) of architecture ``name``; with ``tokenizer``, its
    special-token ids replace the real checkpoint's (they must fit in the vocabulary). ``overrides`` changes keys
    (nested for ``vision_config`` / ``text_config``), e.g. to build a scaled-down copy for a test."""
    family = family_of_architecture(name)
    config_class, _ = _classes(name)
    values = _merge(ARCHITECTURES[name], overrides or {})
    if tokenizer is not None:
        text = values.get("text_config", values)
        vocab = text["vocab_size"]
        for key, token in _TOKEN_KEYS.items():
            if key == "vision_token_id" and family == "qwen3-vl":
                continue  # Qwen3-VL's configuration has no such key
            token_id = _token_id(tokenizer, token, vocab, family)
            target = text if key in ("bos_token_id", "eos_token_id", "pad_token_id") else values
            target[key] = token_id
    config = config_class(**values)
    config._attn_implementation = attn_implementation
    return config


def count_parameters(name: str) -> int:
    """Parameters of architecture ``name``, counted on the meta device (nothing is allocated)."""
    import torch
    from transformers.modeling_utils import no_init_weights

    _, model_class = _classes(name)
    config = architecture_config(name)
    with torch.device("meta"), no_init_weights():
        model = model_class(config)
    return sum(p.numel() for p in model.parameters())


def _tokenizer_folder(name: str, tokenizer_from: str | os.PathLike[str] | None) -> Path:
    """The critic folder whose processor drives architecture ``name``: given, or the tiny critic of its family (the
    demo critic for Qwen2.5-VL, the tiny Qwen3-VL critic for Qwen3-VL; built on first use)."""
    from recipe_lib.models.family import family_of_processor

    if tokenizer_from is not None:
        folder = Path(tokenizer_from)
    elif family_of_architecture(name) == "qwen3-vl":
        from recipe_lib.models.tiny import tiny_critic_family
        from recipe_lib.models.tiny_qwen3 import build_tiny_qwen3_critic, default_qwen3_dir

        folder = default_qwen3_dir()
        if tiny_critic_family(folder) != "qwen3-vl":
            build_tiny_qwen3_critic(folder)
    else:
        from recipe_lib.models.tiny import ensure_demo_critic

        folder = ensure_demo_critic()
    if not (folder / "tokenizer_config.json").is_file():
        raise RecipeError(f"{folder} holds no tokenizer", hint="pass a critic folder (the demo critic or a checkpoint)")
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
    if family_of_processor(processor) != family_of_architecture(name):
        raise RecipeError(
            f"{folder} holds a {family_of_processor(processor)} processor, not one for {name}",
            hint=f"pass a {family_of_architecture(name)} critic folder for the tokenizer and processor",
        )
    return folder


def build_random_critic(
    name: str = "qwen2.5-vl-7b",
    tokenizer_from: str | os.PathLike[str] | None = None,
    device: str = "auto",
    dtype: str = "auto",
    attn_implementation: str = "sdpa",
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """A ``LoadedCritic`` of architecture ``name`` with random (seeded) weights, built directly on ``device``.

    ``tokenizer_from`` is a critic folder whose processor and tokenizer drive the model (default: the tiny critic of
    the architecture's family, built on first use). ``overrides`` as in :func:`architecture_config`.
    """
    import torch
    from transformers import AutoProcessor

    from recipe_lib.models.loading import LoadedCritic, resolve_device, resolve_dtype

    folder = _tokenizer_folder(name, tokenizer_from)
    processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    config = architecture_config(name, processor.tokenizer, attn_implementation, overrides)
    _, model_class = _classes(name)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    try:
        torch.set_default_dtype(getattr(torch, resolved_dtype))
        with torch.device(resolved_device):
            model = model_class(config)
    finally:
        torch.set_default_dtype(previous)
    # Qwen3-VL keeps its token ids in the text configuration, Qwen2.5-VL at the top level.
    ids = config.text_config if family_of_architecture(name) == "qwen3-vl" else config
    pad = getattr(ids, "pad_token_id", None)
    model.generation_config.pad_token_id = pad if pad is not None else ids.bos_token_id
    model.generation_config.eos_token_id = ids.eos_token_id
    model.eval()
    return LoadedCritic(
        model=model,
        processor=processor,
        name=f"{name} (random weights)",
        device=resolved_device,
        dtype=resolved_dtype,
    )


def save_random_critic(
    out_dir: str | os.PathLike[str],
    name: str = "qwen2.5-vl-7b",
    tokenizer_from: str | os.PathLike[str] | None = None,
    weights: bool = True,
    seed: int = 0,
    device: str = "auto",
    dtype: str = "bfloat16",
    overrides: dict[str, Any] | None = None,
) -> Path:
    """A checkpoint folder of architecture ``name`` that every loader takes (transformers, vLLM, cosmos-rl):
    ``config.json`` with the tokenizer's special-token ids, the processor and tokenizer files of ``tokenizer_from``,
    and — with ``weights`` — seeded random weights as ``model.safetensors`` (``weights=False`` writes the config only,
    for ``vllm.LLM(load_format="dummy")``). Same seed, same weights: two backends scored on it see one model.
    ``overrides`` as in :func:`architecture_config` (a scaled-down copy for tests)."""
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    if weights:
        critic = build_random_critic(name, tokenizer_from, device=device, dtype=dtype, seed=seed, overrides=overrides)
        critic.model.save_pretrained(out, safe_serialization=True)
        critic.processor.save_pretrained(out)
        return out
    from transformers import AutoProcessor

    folder = _tokenizer_folder(name, tokenizer_from)
    processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
    config = architecture_config(name, processor.tokenizer, overrides=overrides)
    config.torch_dtype = dtype
    config.save_pretrained(out)
    processor.save_pretrained(out)
    return out
