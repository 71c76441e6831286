"""GRPO's pieces on their own (advantages, clipping, KL, rewards on real outputs) and a short real run of the trainer
on the tiny critic: rollouts, logged signal, checkpoints and resumption."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from support import REPO

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# ---------------------------------------------------------------------------------------------------------------------
# advantages


def test_group_advantages_on_known_groups():
    import torch

    from recipe_lib.train.grpo import group_advantages

    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.5, 1.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
    adv, signal = group_advantages(rewards)
    assert signal.tolist() == [True, False, True, False]
    # Group 0: mean 0.25, sample std 0.5 -> (1 - 0.25) / 0.5 = 1.5 and (0 - 0.25) / 0.5 = -0.5.
    assert adv[0].tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5], abs=1e-5)
    assert adv[1].tolist() == [0.0] * 4 and adv[3].tolist() == [0.0] * 4
    std = math.sqrt(((0.0) ** 2 + 0.5**2 + 0.5**2 + 0.0) / 3)
    assert adv[2].tolist() == pytest.approx([0.0, 0.5 / std, -0.5 / std, 0.0], abs=1e-5)
    assert abs(float(adv[2].sum())) < 1e-5, "advantages of a group sum to zero"
    with pytest.raises(ValueError, match="groups, n >= 2"):
        group_advantages(torch.tensor([[1.0], [0.0]]))


# ---------------------------------------------------------------------------------------------------------------------
# clipping


def test_clipped_surrogate():
    import torch

    from recipe_lib.train.grpo import clipped_surrogate

    old = torch.zeros(1, 6)
    ratio = torch.tensor([[1.0, 1.1, 1.5, 0.5, 1.5, 0.5]])
    adv = torch.tensor([[1.0, 1.0, 1.0, 1.0, -1.0, -1.0]])
    loss, active = clipped_surrogate(ratio.log(), old, adv, epsilon_low=0.2, epsilon_high=0.3)
    # Inside the range the loss is -ratio * A. A > 0 and ratio above 1 + eps_high: capped at 1.3 (clipped).
    # A > 0 and ratio below 1 - eps_low: the unclipped term is smaller, so it is used (no clipping).
    # A < 0 and ratio above the range: unclipped term -1.5 is smaller -> used. A < 0 below: capped at -0.8.
    assert loss[0].tolist() == pytest.approx([-1.0, -1.1, -1.3, -0.5, 1.5, 0.8], abs=1e-6)
    assert active[0].tolist() == [False, False, True, False, False, True]
    # Per-token advantages broadcast from one value per completion.
    loss2, _ = clipped_surrogate(ratio.log(), old, torch.tensor([1.0]), 0.2, 0.3)
    assert loss2[0, 2].item() == pytest.approx(-1.3)


def test_clipping_stops_the_gradient_beyond_the_range():
    import torch

    from recipe_lib.train.grpo import clipped_surrogate

    logp = torch.tensor([[math.log(1.5), math.log(1.05)]], requires_grad=True)
    loss, _ = clipped_surrogate(logp, torch.zeros(1, 2), torch.tensor([1.0]), 0.2, 0.2)
    loss.sum().backward()
    assert logp.grad[0, 0].item() == 0.0, "a clipped token gives no gradient"
    assert logp.grad[0, 1].item() == pytest.approx(-1.05), "inside the range: d(-ratio * A)/dlogp = -ratio * A"


# ---------------------------------------------------------------------------------------------------------------------
# KL


def test_k3_estimator_is_unbiased_for_kl():
    """E_{x~p}[k3(x)] equals KL(p || q) exactly: check it on a categorical by summing over its support."""
    import torch

    from recipe_lib.train.grpo import kl_k3

    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    q = torch.tensor([0.25, 0.25, 0.25, 0.25])
    k3 = kl_k3(p.log(), q.log())
    assert (k3 >= 0).all()
    exact = float((p * (p / q).log()).sum())
    assert float((p * k3).sum()) == pytest.approx(exact, rel=1e-5)
    assert kl_k3(p.log(), p.log()).abs().max().item() == 0.0


def test_grpo_loss_combines_terms_and_counts():
    import torch

    from recipe_lib.train.grpo import grpo_loss

    logp = torch.log(torch.tensor([[0.5, 0.9, 0.0 + 1e-9], [0.4, 0.6, 0.7]]))
    old = logp.clone()
    ref = torch.log(torch.tensor([[0.25, 0.9, 0.5], [0.4, 0.3, 0.7]]))
    mask = torch.tensor([[True, True, False], [True, True, True]])
    adv = torch.tensor([1.0, -1.0])
    loss, stats = grpo_loss(logp, old, ref, adv, mask, 0.2, 0.2, kl_beta=0.1, n_tokens=5)
    assert stats["tokens"] == 5 and stats["clipped"] == 0
    kl = torch.exp(ref - logp) - (ref - logp) - 1
    expected = ((-1.0 * 2 + 1.0 * 3) + 0.1 * float((kl * mask).sum())) / 5
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert stats["kl_sum"] == pytest.approx(float((kl * mask).sum()), rel=1e-5)
    none, _ = grpo_loss(logp, old, None, adv, mask, 0.2, 0.2, kl_beta=0.0)
    assert float(none) == pytest.approx((-2 + 3) / 5)


# ---------------------------------------------------------------------------------------------------------------------
# rewards on real outputs


def test_rewards_on_real_critic_outputs(model_outputs):
    """The recorded Cosmos-Reason1 replies (file names give prediction and label) score as the rewards say."""
    import re

    from recipe_lib.train.rewards import combined_reward, format_reward

    scored = 0
    for name, text in model_outputs.items():
        m = re.search(r"pred(\d)_gt(\d)", name)
        if not m:
            continue
        pred, gt = int(m.group(1)), int(m.group(2))
        gap = abs(pred - gt)
        dense = 1.0 if gap == 0 else 0.5 if gap == 1 else 0.0
        assert combined_reward(text, gt, format_weight=0.0) == dense
        assert combined_reward(text, gt) == dense + 1.0, "default: dense + 1.0 x format (the cookbook's script)"
        assert combined_reward(text, gt, score="linear", format_weight=0.0) == pytest.approx(max(0.0, 1 - gap / 4))
        assert format_reward(text) == 1.0
        scored += 1
    assert scored >= 2


def test_rewards_on_tiny_critic_rollouts(tiny_critic, synth_clips, tmp_path):
    """Real sampled completions of the untrained critic: no vision placeholders, rewards in range, and a completion
    earns a score reward only when it parses."""
    import torch

    from recipe_lib.inference.parsing import parse_answer
    from recipe_lib.models.loading import load_critic
    from recipe_lib.train.batching import ClipCache, Encoder, load_samples
    from recipe_lib.train.config import RewardConfig
    from recipe_lib.train.grpo import VISION_TOKENS, sample_completions, score_completions

    path = _conversations(synth_clips.dataset_dir, tmp_path / "grpo", kind="grpo")
    critic = load_critic(tiny_critic, device="cpu", dtype="float32")
    samples, _ = load_samples(path, require_answer=False)
    enc = Encoder(critic.processor)
    kept, clips, _ = ClipCache().fetch(samples[:3])
    torch.manual_seed(0)
    comps = sample_completions(critic.model, enc, kept, clips, 4, 1.0, 12, "cpu", torch.float32)
    assert len(comps) == 12 and all(0 < len(c) <= 12 for c in comps)
    vision_ids = set(critic.processor.tokenizer.convert_tokens_to_ids(list(VISION_TOKENS)))
    assert not any(vision_ids & set(c) for c in comps)
    rewards, texts, parsed = score_completions(enc, kept, comps, 4, RewardConfig())
    assert rewards.shape == (3, 4) and ((rewards >= 0) & (rewards <= 1)).all()
    for i, text in enumerate(texts):
        assert parsed[i] == parse_answer(text).ok
        if not parsed[i]:
            assert rewards.view(-1)[i] == 0.0


# ---------------------------------------------------------------------------------------------------------------------
# a short real run


def _conversations(dataset_dir: Path, out: Path, kind: str) -> Path:
    import datasets

    from recipe_lib.data.conversations import save_conversations, to_conversations
    from recipe_lib.data.splits import balance_labels
    from recipe_lib.demo import DEMO_PROMPT, binary_labels
    from recipe_lib.profiles import get_profile

    ds = binary_labels(datasets.load_from_disk(str(dataset_dir)))
    if kind == "grpo":
        ds, _ = balance_labels(ds, seed=0)
    conv = to_conversations(ds, kind, prompt=DEMO_PROMPT, video=get_profile("demo").video)
    return save_conversations(conv, out)


@pytest.fixture(scope="module")
def answering_critic(tiny_critic, synth_clips, tmp_path_factory) -> Path:
    """The tiny critic after a short SFT: it writes parsable answers, so rollouts earn rewards."""
    from recipe_lib.config import apply_overrides, load_toml
    from recipe_lib.train.config import training_config
    from recipe_lib.train.sft import train_sft

    tmp = tmp_path_factory.mktemp("grpo_sft")
    data = _conversations(synth_clips.dataset_dir, tmp / "sft", kind="sft")
    over = {
        "policy.model_name_or_path": str(tiny_critic),
        "train.output_dir": str(tmp / "run"),
        "custom.dataset.path": str(data),
        "validation.enable": False,
        "train.train_batch_per_replica": 8,
        "train.train_policy.mini_batch": 8,
        "local.max_steps": 60,
    }
    cfg = training_config(apply_overrides(load_toml(REPO / "configs/demo/sft.toml"), over), "sft")
    return train_sft(cfg, progress=False).final_dir


def _grpo_config(tmp: Path, start: Path, data: Path, **over):  # noqa: ANN202
    from recipe_lib.config import apply_overrides, load_toml
    from recipe_lib.train.config import training_config

    fixed = {
        "policy.model_name_or_path": str(start),
        "train.output_dir": str(tmp / "run"),
        "custom.dataset.path": str(data),
        "custom.eval_dataset.path": str(data),
        "train.train_batch_per_replica": 8,
        "train.train_policy.mini_batch": 4,
        "train.train_policy.mu_iterations": 2,
        "train.train_policy.temperature": 1.0,
        "train.ckpt.save_freq": 2,
        "local.max_steps": 3,
        "validation.enable": True,
        "validation.freq": 2,
        "validation.batch_size": 8,
    }
    return training_config(apply_overrides(load_toml(REPO / "configs/demo/grpo.toml"), {**fixed, **over}), "grpo")


def test_grpo_run_logs_signal_and_resumes(answering_critic, synth_clips, tmp_path):
    from recipe_lib.models.loading import load_critic
    from recipe_lib.train.grpo import train_grpo

    data = _conversations(synth_clips.dataset_dir, tmp_path / "grpo", kind="grpo")
    result = train_grpo(_grpo_config(tmp_path, answering_critic, data), progress=False)
    assert result.steps == 3 and len(result.history) == 3
    keys = {"reward_mean", "signal_fraction", "kl", "clip_fraction", "parsed_fraction", "completion_length"}
    assert keys <= set(result.history[0])
    for h in result.history:
        assert 0 <= h["reward_mean"] <= 1 and 0 <= h["signal_fraction"] <= 1 and h["kl"] >= 0
        assert 0 <= h["clip_fraction"] <= 1 and h["prompts"] == 2
    assert any(h["parsed_fraction"] > 0 for h in result.history), "the SFT'd critic answers in the right format"
    assert result.history[0]["kl"] < 1e-6, "the first step samples from the reference itself"
    assert [e["step"] for e in result.evals] == [2, 3]
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert samples[0]["texts"] and len(samples[0]["rewards"]) == 2
    from recipe_lib.train.rewards import format_reward

    # configs/demo/grpo.toml keeps the cookbook's format_weight 1.0: with the compact prompt no reply has a think
    # block, so the format term is 0 throughout (as the config says) and rewards stay in [0, 1].
    assert _grpo_config(tmp_path, answering_critic, data).custom.reward.format_weight == 1.0
    assert all(format_reward(t) == 0.0 for s in samples for t in s["texts"])
    summary = result.summary()
    assert summary["reward_first"] == result.history[0]["reward_mean"]
    assert summary["reward_last"] == result.history[-1]["reward_mean"]
    load_critic(result.final_dir, device="cpu", dtype="float32")
    # Two more steps resume from the final checkpoint of the three-step run.
    more = train_grpo(_grpo_config(tmp_path, answering_critic, data, **{"local.max_steps": 5}), progress=False)
    assert more.resumed_from == 3 and more.steps == 5 and [h["step"] for h in more.history] == [1, 2, 3, 4, 5]


def test_grpo_needs_labels_and_whole_groups(answering_critic, synth_clips, tmp_path):
    import datasets

    from recipe_lib.errors import ConfigError, DataError
    from recipe_lib.train.grpo import train_grpo

    data = _conversations(synth_clips.dataset_dir, tmp_path / "grpo", kind="grpo")
    with pytest.raises(ConfigError, match="not a multiple of rollout.n_generation"):
        over = {"train.train_batch_per_replica": 6, "train.train_policy.mini_batch": 2}
        train_grpo(_grpo_config(tmp_path, answering_critic, data, **over))
    ds = datasets.load_from_disk(str(data)).remove_columns(["reference", "pc"])
    ds.save_to_disk(str(tmp_path / "nolabels"))
    with pytest.raises(DataError, match="no label"):
        train_grpo(_grpo_config(tmp_path / "b", answering_critic, tmp_path / "nolabels"))
