"""The tiny Qwen3-VL critic (Cosmos-Reason2's family), family detection, and the Qwen3-VL-8B architecture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recipe_lib.errors import RecipeError
from recipe_lib.models.family import QWEN2_5_VL, QWEN3_VL, family_of_model, family_of_processor, patch_factor
from recipe_lib.models.loading import load_critic
from recipe_lib.models.tiny import REQUIRED_FILES, count_parameters, is_tiny_critic, tiny_critic_family
from recipe_lib.models.tiny_qwen3 import TinyQwen3Config


@pytest.fixture(scope="module")
def qwen3(tiny_qwen3_critic: Path):  # noqa: ANN201
    return load_critic(str(tiny_qwen3_critic), device="cpu")


def test_folder_is_complete_and_marked_qwen3(tiny_qwen3_critic: Path) -> None:
    for name in REQUIRED_FILES:
        assert (tiny_qwen3_critic / name).is_file(), name
    assert is_tiny_critic(tiny_qwen3_critic)
    assert tiny_critic_family(tiny_qwen3_critic) == QWEN3_VL
    marker = json.loads((tiny_qwen3_critic / "tiny_critic.json").read_text())
    assert marker["parameters"] == count_parameters(tiny_qwen3_critic)
    assert 500_000 < marker["parameters"] < 2_000_000
    config = json.loads((tiny_qwen3_critic / "config.json").read_text())
    assert config["model_type"] == "qwen3_vl"
    assert config["text_config"]["rope_scaling"]["mrope_interleaved"] is True


def test_loads_as_qwen3_vl_with_auto_classes(qwen3, tiny_critic: Path) -> None:
    assert type(qwen3.model).__name__ == "Qwen3VLForConditionalGeneration"
    assert type(qwen3.processor).__name__ == "Qwen3VLProcessor"
    assert family_of_model(qwen3.model) == QWEN3_VL and family_of_processor(qwen3.processor) == QWEN3_VL
    assert patch_factor(qwen3.processor) == 32
    demo = load_critic(str(tiny_critic), device="cpu")
    assert family_of_model(demo.model) == QWEN2_5_VL and family_of_processor(demo.processor) == QWEN2_5_VL
    assert patch_factor(demo.processor) == 28
    assert tiny_critic_family(tiny_critic) == QWEN2_5_VL
    for digit in "12345":  # expected mode reads one token per score
        assert len(qwen3.processor.tokenizer.encode(digit, add_special_tokens=False)) == 1


def test_forward_on_frames_writes_timestamps(qwen3) -> None:
    import torch

    from recipe_lib.inference.requests import encode_clip
    from recipe_lib.video import ModelVideo, VideoInfo

    frames = torch.randint(0, 256, (4, 3, 64, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    info = VideoInfo(path="x.mp4", frames=8, fps=4.0, width=96, height=64, duration=2.0, codec="h264")
    video = ModelVideo(frames=frames, sample_fps=2.0, info=info, indices=(0, 2, 5, 7))
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Score it."}]}]
    text = qwen3.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    encoded = encode_clip(qwen3.processor, text, video)
    assert "second_per_grid_ts" not in encoded
    decoded = qwen3.processor.tokenizer.decode(encoded["input_ids"][0])
    # One timestamp per temporal patch (2 frames), from the frames' positions at the clip's 4 fps: (0+2)/2/4, (5+7)/2/4.
    assert "<0.2 seconds>" in decoded and "<1.5 seconds>" in decoded
    assert encoded["video_grid_thw"].tolist() == [[2, 4, 6]]
    with torch.inference_mode():
        logits = qwen3.model(**encoded, use_cache=False, logits_to_keep=1).logits
    assert logits.shape[-1] == qwen3.model.config.text_config.vocab_size and torch.isfinite(logits).all()


def test_config_checks() -> None:
    with pytest.raises(RecipeError, match="mrope_section must sum"):
        TinyQwen3Config(mrope_section=[4, 4, 4]).validate()
    with pytest.raises(RecipeError, match="square"):
        TinyQwen3Config(num_position_embeddings=50).validate()
    with pytest.raises(RecipeError, match="deepstack"):
        TinyQwen3Config(deepstack_visual_indexes=[5]).validate()


def test_qwen3_vl_8b_shape(tiny_qwen3_critic: Path, tiny_critic: Path, tmp_path: Path) -> None:
    from transformers import AutoConfig

    from recipe_lib.models.arch import architecture_names, count_parameters, save_random_critic

    assert "qwen3-vl-8b" in architecture_names()
    assert abs(count_parameters("qwen3-vl-8b") - 8.77e9) < 0.01e9  # Qwen3-VL-8B-Instruct's published 8.77 B
    out = save_random_critic(tmp_path / "cr2", "qwen3-vl-8b", tokenizer_from=tiny_qwen3_critic, weights=False)
    config = AutoConfig.from_pretrained(str(out))
    tok = load_critic(str(tiny_qwen3_critic), device="cpu").processor.tokenizer
    assert type(config).__name__ == "Qwen3VLConfig" and config.text_config.num_hidden_layers == 36
    assert config.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert config.text_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert (out / "video_preprocessor_config.json").is_file()
    with pytest.raises(RecipeError, match="qwen2.5-vl processor, not one for qwen3-vl-8b"):
        save_random_critic(tmp_path / "wrong", "qwen3-vl-8b", tokenizer_from=tiny_critic, weights=False)


def test_cli_builds_and_reports_the_qwen3_family(tiny_qwen3_critic: Path, tmp_path: Path) -> None:
    from support import run_cli

    done = run_cli("tiny-model", "--family", "qwen3-vl", "--out", str(tiny_qwen3_critic))
    assert done.returncode == 0, done.stderr
    assert "already built" in done.stdout and "parameters: 941,632" in done.stdout
    bad = run_cli("tiny-model", "--family", "qwen4-vl", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "invalid choice: 'qwen4-vl'" in bad.stderr
