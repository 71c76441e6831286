"""The embedded demo critic (a real, tiny Qwen2.5-VL built locally) and the critic loader."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from recipe_lib.errors import RecipeError
from recipe_lib.models.loading import load_critic, resolve_dtype
from recipe_lib.models.tiny import (
    REQUIRED_FILES,
    SPECIAL_TOKENS,
    TinyCriticConfig,
    build_tiny_critic,
    count_parameters,
    ensure_demo_critic,
    folder_size,
    is_tiny_critic,
)

VIDEO_MESSAGES = [
    {"role": "system", "content": [{"type": "text", "text": "You are a careful critic of physics in videos."}]},
    {
        "role": "user",
        "content": [
            {"type": "video", "video": "clip.mp4", "fps": 4.0},
            {"type": "text", "text": "Rate the physical plausibility of the video from 1 to 5."},
        ],
    },
]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_critic(tmp_path_factory.mktemp("tiny") / "critic")


@pytest.fixture(scope="module")
def critic(built: Path):  # noqa: ANN201
    return load_critic(str(built), device="cpu")


def _video(frames: int, seed: int = 0):  # noqa: ANN202
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (frames, 3, 112, 112), dtype=torch.uint8, generator=generator)


def test_build_writes_a_small_complete_folder(built: Path) -> None:
    for name in REQUIRED_FILES:
        assert (built / name).is_file(), name
    assert is_tiny_critic(built)
    assert folder_size(built) <= 20 * 1024 * 1024
    marker = json.loads((built / "tiny_critic.json").read_text())
    assert marker["config"]["seed"] == 0
    assert marker["config"]["initializer_range"] == 0.08
    assert marker["parameters"] == count_parameters(built)
    assert 500_000 < marker["parameters"] < 2_000_000
    assert 1000 <= marker["tokenizer_length"] <= 2048


def test_build_is_deterministic(built: Path, tmp_path: Path) -> None:
    again = build_tiny_critic(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json", "tiny_critic.json"):
        assert _sha256(built / name) == _sha256(again / name), name
    other_seed = build_tiny_critic(tmp_path / "seed1", TinyCriticConfig(seed=1))
    assert _sha256(built / "model.safetensors") != _sha256(other_seed / "model.safetensors")


def test_loads_with_auto_classes(built: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(built)
    model = AutoModelForImageTextToText.from_pretrained(built)
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    tok = processor.tokenizer
    config = model.config
    assert config.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert config.vision_end_token_id == tok.convert_tokens_to_ids("<|vision_end|>")
    assert config.vision_config.out_hidden_size == config.text_config.hidden_size
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    assert config.text_config.vocab_size >= len(tok)
    head_dim = config.text_config.hidden_size // config.text_config.num_attention_heads
    assert sum(config.text_config.rope_scaling["mrope_section"]) * 2 == head_dim
    assert processor.video_processor.size["shortest_edge"] == 3136
    assert processor.image_processor.max_pixels == 12845056


def test_special_tokens_and_digits_are_single_tokens(built: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(built)
    ids = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(ids[0], ids[0] + len(SPECIAL_TOKENS)))  # appended after the BPE vocabulary, in order
    for token in SPECIAL_TOKENS:
        assert tok.encode(token, add_special_tokens=False) == [tok.convert_tokens_to_ids(token)]
    digit_ids = []
    for digit in "12345":
        encoded = tok.encode(digit, add_special_tokens=False)
        assert len(encoded) == 1, digit
        digit_ids.append(encoded[0])
        assert tok.encode("\n" + digit, add_special_tokens=False)[-1] == encoded[0]
    answer = tok.encode("<answer>\n3\n</answer>", add_special_tokens=False)
    assert digit_ids[2] in answer
    assert tok.decode(answer) == "<answer>\n3\n</answer>"
    assert tok.tokenize("12345") == list("12345")
    text = "The ball falls under gravity, so the motion is plausible."
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    assert len(tok.encode(text, add_special_tokens=False)) <= 14  # real merges, not bytes


def test_chat_template_renders_video_and_generation_prompt(critic) -> None:  # noqa: ANN001
    text = critic.processor.apply_chat_template(VIDEO_MESSAGES, tokenize=False, add_generation_prompt=True)
    assert text.count("<|video_pad|>") == 1
    assert "<|vision_start|><|video_pad|><|vision_end|>" in text
    assert text.startswith("<|im_start|>system\nYou are a careful critic of physics in videos.<|im_end|>\n")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    plain = critic.processor.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<answer>\n4\n</answer>"}],
        tokenize=False,
    )
    assert plain == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n<answer>\n4\n</answer><|im_end|>\n"
    )
    image = critic.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image", "image": "x.png"}]}], tokenize=False
    )
    assert "<|vision_start|><|image_pad|><|vision_end|>" in image


def test_forward_and_generate_on_a_video(critic) -> None:  # noqa: ANN001
    import torch

    processor, model = critic.processor, critic.model
    text = processor.apply_chat_template(VIDEO_MESSAGES, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], videos=[_video(4)], fps=4.0, return_tensors="pt")
    assert inputs["video_grid_thw"].tolist() == [[2, 8, 8]]  # 112x112 stays 112x112: 8x8 patches of 14
    n_video = int((inputs["input_ids"] == model.config.video_token_id).sum())
    assert n_video == 2 * 8 * 8 // 4
    with torch.inference_mode():
        out = model(**inputs)
    assert out.logits.shape == (1, inputs["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert torch.isfinite(out.logits).all()
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape[0] == 1
    assert inputs["input_ids"].shape[1] < generated.shape[1] <= inputs["input_ids"].shape[1] + 4

    # An 8-frame clip: a (4, 8, 8) grid, 64 visual tokens after the 2x2 merge; a left-padded batch of two.
    processor.tokenizer.padding_side = "left"
    batch = processor(
        text=[text, text + "<answer>\n"],
        videos=[_video(8, 1), _video(8, 2)],
        fps=4.0,
        padding=True,
        return_tensors="pt",
    )
    assert batch["video_grid_thw"].tolist() == [[4, 8, 8], [4, 8, 8]]
    assert int((batch["input_ids"][0] == model.config.video_token_id).sum()) == 64
    with torch.inference_mode():
        logits = model(**batch).logits
    assert logits.shape[:2] == batch["input_ids"].shape


def test_load_critic_on_the_tiny_critic(critic, built: Path) -> None:  # noqa: ANN001
    assert critic.device == "cpu"
    assert critic.dtype == "float32"
    assert critic.name == str(built)
    assert not critic.model.training
    assert str(critic.model.dtype) == "torch.float32"
    assert resolve_dtype("auto", "cuda") == "bfloat16"
    assert resolve_dtype("bf16", "cpu") == "bfloat16"


def test_load_critic_errors(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RecipeError, match="model folder not found"):
        load_critic(str(tmp_path / "no-such-model"))
    with pytest.raises(RecipeError, match="model folder not found"):
        load_critic("./missing/critic")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "weights.bin").write_bytes(b"")
    with pytest.raises(RecipeError, match=r"has no config\.json") as info:
        load_critic(str(empty))
    assert "config.json" in (info.value.hint or "")
    with pytest.raises(RecipeError, match="is a file"):
        load_critic(str(built / "config.json"))
    with pytest.raises(RecipeError, match="unknown dtype"):
        load_critic(str(built), dtype="float8")
    with pytest.raises(RecipeError, match="unknown device"):
        load_critic(str(built), device="tpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RecipeError, match="not in the Hugging Face cache") as info:
        load_critic("nvidia/Cosmos-Reason1-7B-not-cached")
    assert "local folder" in (info.value.hint or "")


def test_ensure_demo_critic_builds_and_repairs(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "tiny-critic"
    assert ensure_demo_critic(folder) == folder.resolve()
    assert is_tiny_critic(folder)
    weights = _sha256(folder / "model.safetensors")
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert ensure_demo_critic(folder) == folder.resolve()  # complete: kept as it is
    assert (folder / "config.json").stat().st_mtime_ns == stamp
    (folder / "model.safetensors").unlink()  # incomplete: rebuilt
    assert not is_tiny_critic(folder)
    ensure_demo_critic(folder)
    assert _sha256(folder / "model.safetensors") == weights
    foreign = tmp_path / "my-notes"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(RecipeError, match="refusing to overwrite"):
        ensure_demo_critic(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_invalid_config_is_a_recipe_error(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="mrope_section"):
        build_tiny_critic(tmp_path / "bad", TinyCriticConfig(mrope_section=[4, 4, 4]))
    with pytest.raises(RecipeError, match="fullatt_block_indexes"):
        build_tiny_critic(tmp_path / "bad", TinyCriticConfig(fullatt_block_indexes=[5]))
    assert not (tmp_path / "bad").exists()


def test_cli_tiny_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from recipe_lib.cli import main

    out = tmp_path / "cli-critic"
    assert main(["tiny-model", "--out", str(out), "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"saved tiny critic to {out}" in printed
    assert "parameters:" in printed
    assert "size on disk:" in printed
    assert json.loads((out / "tiny_critic.json").read_text())["config"]["seed"] == 2
    assert main(["tiny-model", "--out", str(out)]) == 0
    assert "already built" in capsys.readouterr().out
    assert main(["tiny-model", "--out", str(out), "--force"]) == 0
    assert json.loads((out / "tiny_critic.json").read_text())["config"]["seed"] == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "data.csv").write_text("a,b\n")
    assert main(["tiny-model", "--out", str(tmp_path / "other")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_saved_random_architecture_loads_back_with_the_same_weights(tiny_critic, tmp_path):
    """``tiny-model --arch`` writes a checkpoint any loader takes; the same seed gives the same weights."""
    import torch

    from recipe_lib.models.arch import build_random_critic, save_random_critic

    small = {
        "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 1, "rope_scaling": {"type": "mrope", "mrope_section": [8, 12, 12]},
        "vision_config": {"depth": 1, "hidden_size": 64, "intermediate_size": 96, "num_heads": 2,
                          "out_hidden_size": 128, "fullatt_block_indexes": [0]},
    }  # fmt: skip
    out = save_random_critic(tmp_path / "ckpt", tokenizer_from=tiny_critic, seed=5, device="cpu", dtype="float32",
                             overrides=small)  # fmt: skip
    loaded = load_critic(str(out), device="cpu", dtype="float32")
    again = build_random_critic(tokenizer_from=tiny_critic, device="cpu", dtype="float32", seed=5, overrides=small)
    for (name, a), (_, b) in zip(loaded.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), name
    config_only = save_random_critic(tmp_path / "cfg", tokenizer_from=tiny_critic, weights=False, overrides=small)
    assert (config_only / "config.json").is_file() and not list(config_only.glob("*.safetensors"))
