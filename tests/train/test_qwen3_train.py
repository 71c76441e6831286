"""In-process SFT and GRPO on the tiny Qwen3-VL critic (Cosmos-Reason2's family) with real rendered clips: SFT on
Cosmos-Reason2-style bare-digit answers, a loadable checkpoint that ``score`` reads, LoRA, and GRPO rollouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support import REPO

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

REASON2 = "cosmos_reason2"


def _conversations(dataset_dir: Path, out: Path, kind: str, prompt: str) -> Path:
    import datasets

    from recipe_lib.data.conversations import save_conversations, to_conversations
    from recipe_lib.data.splits import balance_labels
    from recipe_lib.demo import binary_labels
    from recipe_lib.profiles import get_profile

    ds = binary_labels(datasets.load_from_disk(str(dataset_dir)))
    if kind == "grpo":
        ds, _ = balance_labels(ds, seed=0)
    return save_conversations(to_conversations(ds, kind, prompt=prompt, video=get_profile("demo").video), out)


def _config(kind: str, tmp: Path, model: Path, data: Path, **over):  # noqa: ANN202
    from recipe_lib.config import apply_overrides, load_toml
    from recipe_lib.train.config import training_config

    fixed = {
        "policy.model_name_or_path": str(model),
        "train.output_dir": str(tmp / "run"),
        "custom.dataset.path": str(data),
        "custom.eval_dataset.path": str(data),
        "train.train_batch_per_replica": 4,
        "train.train_policy.mini_batch": 2,
        "train.ckpt.save_freq": 2,
        "local.max_steps": 2,
        "local.num_workers": 1,
        "validation.enable": True,
        "validation.freq": 2,
        "validation.batch_size": 8,
    }
    return training_config(apply_overrides(load_toml(REPO / f"configs/demo/{kind}.toml"), {**fixed, **over}), kind)


@pytest.fixture(scope="module")
def reason2_sft(synth_clips, tmp_path_factory) -> Path:  # noqa: ANN001
    return _conversations(synth_clips.dataset_dir, tmp_path_factory.mktemp("conv") / "sft", "sft", REASON2)


def test_reason2_conversations_answer_with_the_bare_digit(reason2_sft: Path, tiny_qwen3_critic: Path) -> None:
    from recipe_lib.models.loading import load_critic
    from recipe_lib.train.batching import Encoder, load_samples
    from recipe_lib.train.held_out import answer_prefix_of

    samples, skipped = load_samples(reason2_sft)
    assert not skipped and {s.answer for s in samples} <= {"1", "5"}  # binary demo labels, line format
    assert answer_prefix_of(samples) == ""  # held-out scoring reads the digit right after the assistant turn opens
    enc = Encoder(load_critic(tiny_qwen3_critic, device="cpu").processor)
    assert enc.family == "qwen3-vl" and enc.patch_factor == 32
    assert enc.answer_ids("5") == [*enc.tokenizer.encode("5", add_special_tokens=False), *enc.end_ids]


def test_sft_steps_on_qwen3_give_a_checkpoint_that_scores(reason2_sft, tiny_qwen3_critic, synth_clips, tmp_path):  # noqa: ANN001
    import math

    import torch

    from recipe_lib.inference.scoring import score_videos
    from recipe_lib.models.loading import load_critic
    from recipe_lib.train.sft import train_sft
    from support import demo_score_config

    result = train_sft(_config("sft", tmp_path, tiny_qwen3_critic, reason2_sft), progress=False)
    assert result.steps == 2 and all(math.isfinite(h["loss"]) and h["grad_norm"] > 0 for h in result.history)
    assert [e["step"] for e in result.evals] == [2] and result.evals[0]["n"] == 16
    evals = [json.loads(line) for line in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert 0 <= evals[-1]["accuracy"] <= 1 and 0 < evals[-1]["mean_digit_mass"] <= 1
    final = load_critic(result.final_dir, device="cpu", dtype="float32")
    start = load_critic(tiny_qwen3_critic, device="cpu", dtype="float32")
    assert type(final.model).__name__ == "Qwen3VLForConditionalGeneration"
    assert any(
        not torch.equal(a, b) for (_, a), (_, b) in zip(final.model.named_parameters(), start.model.named_parameters())
    )
    scored = score_videos(
        demo_score_config(result.final_dir, [synth_clips.dataset_dir], tmp_path / "scores", prompt=REASON2),
        progress=False,
    )
    assert scored.n_scored_now == 16 and scored.n_unparsed == 0


def test_lora_on_qwen3_adapts_the_language_model(reason2_sft, tiny_qwen3_critic, tmp_path):  # noqa: ANN001
    import torch

    from recipe_lib.models.loading import load_critic
    from recipe_lib.train.sft import train_sft

    over = {"local.lora.enable": True, "local.lora.r": 4, "validation.enable": False}
    result = train_sft(_config("sft", tmp_path, tiny_qwen3_critic, reason2_sft, **over), progress=False)
    merged = load_critic(result.final_dir, device="cpu", dtype="float32").model.state_dict()
    start = load_critic(tiny_qwen3_critic, device="cpu", dtype="float32").model.state_dict()
    assert merged.keys() == start.keys()
    differs = {k for k in merged if not torch.equal(merged[k], start[k])}
    assert differs and all(".language_model." in k for k in differs), differs


def test_grpo_steps_on_qwen3(tiny_qwen3_critic, synth_clips, tmp_path):  # noqa: ANN001
    from recipe_lib.demo import DEMO_PROMPT
    from recipe_lib.train.grpo import train_grpo

    data = _conversations(synth_clips.dataset_dir, tmp_path / "grpo", "grpo", DEMO_PROMPT)
    over = {
        "train.train_batch_per_replica": 4,
        "train.train_policy.mini_batch": 4,
        "train.train_policy.temperature": 1.0,
        "rollout.n_generation": 2,
        "rollout.max_response_length": 8,
        "validation.enable": False,
    }
    result = train_grpo(_config("grpo", tmp_path, tiny_qwen3_critic, data, **over), progress=False)
    assert result.steps == 2 and len(result.history) == 2
    for h in result.history:
        assert 0 <= h["reward_mean"] <= 1 and h["kl"] >= 0 and h["prompts"] == 2  # 2 prompts x 2 completions
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert samples and samples[0]["texts"]  # sampled completions, repeated rows (Qwen3-VL: see requests.repeat_rows)
