"""In-process SFT on the real tiny Qwen2.5-VL critic with real rendered clips: answer-only labels, batching, schedule,
checkpoints that load and resume after SIGKILL, LoRA, and learning where it is reliable on a CPU."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import REPO, run_cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

COMPACT = "video_reward_compact"


def _prompt() -> str:
    from recipe_lib.demo import DEMO_PROMPT

    return DEMO_PROMPT


def _conversations(dataset_dir: Path, out: Path, kind: str = "sft", binary: bool = True) -> Path:
    import datasets

    from recipe_lib.data.conversations import save_conversations, to_conversations
    from recipe_lib.demo import binary_labels
    from recipe_lib.profiles import get_profile

    ds = datasets.load_from_disk(str(dataset_dir))
    if binary:
        ds = binary_labels(ds)
    return save_conversations(to_conversations(ds, kind, prompt=_prompt(), video=get_profile("demo").video), out)


def _config(tmp: Path, model: Path, train: Path, **over):  # noqa: ANN202 - SFTConfig
    from recipe_lib.config import apply_overrides, load_toml
    from recipe_lib.train.config import training_config

    fixed = {
        "policy.model_name_or_path": str(model),
        "train.output_dir": str(tmp / "run"),
        "custom.dataset.path": str(train),
        "custom.eval_dataset.path": str(train),
        "validation.enable": False,
        "train.train_batch_per_replica": 4,
        "train.train_policy.mini_batch": 2,
        "train.ckpt.save_freq": 2,
        "train.ckpt.max_keep": 2,
        "local.max_steps": 4,
        "local.num_workers": 1,
    }
    mapping = apply_overrides(load_toml(REPO / "configs/demo/sft.toml"), {**fixed, **over})
    return training_config(mapping, "sft")


@pytest.fixture(scope="module")
def sft_data(synth_clips, tmp_path_factory) -> Path:
    return _conversations(synth_clips.dataset_dir, tmp_path_factory.mktemp("conv") / "sft")


# ---------------------------------------------------------------------------------------------------------------------
# batching


def test_answer_only_labels(tiny_critic, sft_data):
    from recipe_lib.models.loading import load_critic
    from recipe_lib.train.batching import ClipCache, Encoder, load_samples

    critic = load_critic(tiny_critic, device="cpu", dtype="float32")
    samples, skipped = load_samples(sft_data)
    assert not skipped and len(samples) == 16
    enc = Encoder(critic.processor)
    assert enc.end_text == "<|im_end|>"
    batch = samples[:3]
    kept, clips, bad = ClipCache().fetch(batch)
    assert not bad
    inputs, targets, mask = enc.encode_sft(kept, clips)
    tok = critic.processor.tokenizer
    for i, s in enumerate(kept):
        answer = tok.encode(s.answer + "<|im_end|>", add_special_tokens=False)
        row = targets[i][mask[i]].tolist()
        assert row == answer, "targets are exactly the answer tokens plus the end-of-turn token"
        assert inputs["input_ids"][i, -len(answer) :].tolist() == answer, "rows end with their answer (left padding)"
        assert tok.decode(row) == f"<answer>\n{s.reference}\n</answer><|im_end|>"
    # Prompt and video tokens carry no label; one video placeholder per merged visual token.
    assert int(mask.sum()) == sum(len(tok.encode(s.answer, add_special_tokens=False)) + 1 for s in kept)
    video_id = tok.convert_tokens_to_ids("<|video_pad|>")
    grid = inputs["video_grid_thw"]
    assert int((inputs["input_ids"] == video_id).sum()) == int((grid.prod(-1) // 4).sum())
    assert inputs["attention_mask"].sum(-1).tolist() == [int((row != enc.pad_id).sum()) for row in inputs["input_ids"]]


@pytest.mark.parametrize("family", ["qwen2.5-vl", "qwen3-vl"])
def test_memoised_encodings_equal_the_processors_own_batch(family, request, sft_data):
    """Prompts encoded one by one (and kept) collate to exactly the tensors the processor makes for the list; a
    second encoding of the same samples is served from the memo, a full memo encodes anew and keeps nothing."""
    import torch

    from recipe_lib.inference.requests import processor_video_kwargs
    from recipe_lib.models.loading import load_critic
    from recipe_lib.train.batching import ClipCache, Encoder, load_samples
    from recipe_lib.video import fit_to_factor

    folder = request.getfixturevalue("tiny_critic" if family == "qwen2.5-vl" else "tiny_qwen3_critic")
    processor = load_critic(folder, device="cpu").processor
    samples, _ = load_samples(sft_data)
    kept, clips, _ = ClipCache().fetch(samples[:5])
    kept, clips = kept[:4] + [kept[0]], clips[:4] + [clips[0]]  # a repeated prompt, as GRPO's groups have
    enc = Encoder(processor, memo_bytes=1 << 30)
    assert enc.family == family
    sized = [fit_to_factor(c, enc.patch_factor) for c in clips]
    reference = processor(
        text=[enc.prompt_text(s) for s in kept],
        videos=[c.frames for c in sized],
        **processor_video_kwargs(sized, processor),
        padding=True,
        return_tensors="pt",
    )
    for _ in range(2):
        batch = enc.encode_prompts(kept, clips)
        assert set(batch) == set(reference.keys())
        for key, value in batch.items():
            assert torch.equal(value, torch.as_tensor(reference[key], dtype=value.dtype)), key
    assert enc.encoded == 4, "four distinct prompts, each through the processor once"
    assert len(enc._memo) == 4 and enc.memo_used > 0
    unkept = Encoder(processor, memo_bytes=0)
    unkept.encode_prompts(kept, clips)
    unkept.encode_prompts(kept, clips)
    assert unkept.encoded == 10 and unkept.memo_used == 0 and not unkept._memo


@pytest.mark.parametrize("family", ["qwen2.5-vl", "qwen3-vl"])
def test_training_speedups_give_the_stock_loss_and_gradients(family, request, sft_data):
    """The patches training turns on (recipe_lib.train.model.training_speedups) compute the same answer log-likelihood
    and the same gradient for every parameter, on clips whose attention windows come in several sizes."""
    import torch

    from recipe_lib.models.loading import load_critic
    from recipe_lib.train.batching import Encoder, load_samples, token_logprobs
    from recipe_lib.train.model import training_speedups
    from recipe_lib.video import ModelVideo, VideoInfo

    folder = request.getfixturevalue("tiny_critic" if family == "qwen2.5-vl" else "tiny_qwen3_critic")
    samples, _ = load_samples(sft_data)
    g = torch.Generator().manual_seed(5)
    sizes = [(8, 84, 140), (4, 112, 112), (8, 56, 196)]
    clips = [
        ModelVideo(
            torch.randint(0, 256, (t, 3, h, w), dtype=torch.uint8, generator=g),
            4.0,
            VideoInfo(f"/clips/{i}.mp4", t, 4.0, t / 4, w, h, "synthetic"),
        )
        for i, (t, h, w) in enumerate(sizes)
    ]
    results = []
    for patched in (False, True):
        critic = load_critic(folder, device="cpu", dtype="float32")
        model = critic.model.train()
        if patched:
            counts = training_speedups(model)
            assert counts["linear_patch_embed"] == 1
            assert counts["batched_vision_attention"] == (2 if family == "qwen2.5-vl" else 0)
        inputs, targets, mask = Encoder(critic.processor).encode_sft(samples[:3], clips)
        loss = -token_logprobs(model, inputs, targets).sum() / mask.sum()
        loss.backward()
        results.append((float(loss), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (stock_loss, stock), (fast_loss, fast) = results
    assert abs(fast_loss - stock_loss) < 1e-5 * abs(stock_loss)
    assert set(fast) == set(stock) and any("visual" in n for n in stock)
    for name, grad in stock.items():
        assert torch.allclose(fast[name], grad, rtol=1e-4, atol=1e-6), name


def test_loss_uses_only_answer_positions(tiny_critic, sft_data):
    """The logits kept (last K + 1) give the same answer log-likelihood as a full forward pass."""
    import torch

    from recipe_lib.models.loading import load_critic
    from recipe_lib.train.batching import ClipCache, Encoder, load_samples, token_logprobs

    critic = load_critic(tiny_critic, device="cpu", dtype="float32")
    samples, _ = load_samples(sft_data)
    enc = Encoder(critic.processor)
    kept, clips, _ = ClipCache().fetch(samples[:2])
    inputs, targets, mask = enc.encode_sft(kept, clips)
    with torch.no_grad():
        fast = token_logprobs(critic.model, inputs, targets)
        full = critic.model(**inputs, use_cache=False).logits.float().log_softmax(-1)
    k = targets.shape[1]
    ref = full[:, -k - 1 : -1, :].gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1) * mask
    assert torch.allclose(fast, ref, atol=1e-4)


def test_bad_conversations_are_reported(tmp_path):
    from recipe_lib.errors import DataError
    from recipe_lib.train.batching import parse_sample

    user = {"role": "user", "content": [{"type": "video", "video": "a.mp4", "fps": 4}, {"type": "text", "text": "q"}]}
    with pytest.raises(DataError, match="no assistant answer"):
        parse_sample([user], 0)
    two = {"role": "user", "content": user["content"] + [{"type": "video", "video": "b.mp4"}]}
    with pytest.raises(DataError, match="exactly one video"):
        parse_sample([two, {"role": "assistant", "content": [{"type": "text", "text": "x"}]}], 3)
    with pytest.raises(DataError, match="not a list of messages"):
        parse_sample("hello", 1)
    sample = parse_sample([user], 2, reference="4", require_answer=False, vision_overrides={"max_pixels": 3136})
    assert sample.reference == 4 and sample.video_settings.max_pixels == 3136 and sample.video_settings.fps == 4


def test_unreadable_clip_is_skipped_and_counted(tiny_critic, sft_data, tmp_path):
    """A training sample whose clip is broken is left out, recorded in skipped.jsonl, and training goes on."""
    import datasets

    ds = datasets.load_from_disk(str(sft_data))
    rows = ds.to_list()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    conv = json.loads(rows[0]["conversations"])
    conv[1]["content"][0]["video"] = str(broken)
    rows[0]["conversations"] = json.dumps(conv)
    rows[1]["conversations"] = "{not json"
    path = tmp_path / "data"
    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    from recipe_lib.train.sft import train_sft

    result = train_sft(_config(tmp_path, tiny_critic, path, **{"local.max_steps": 1}), progress=False)
    reasons = " | ".join(s["reason"] for s in result.skipped)
    assert len(result.skipped) == 2 and "not valid JSON" in reasons and "broken.mp4" in reasons
    assert (tmp_path / "run" / "skipped.jsonl").read_text().count("\n") == 2
    assert result.steps == 1


# ---------------------------------------------------------------------------------------------------------------------
# schedule and batch order


def test_lr_schedule_matches_cosmos_rl_shape():
    from recipe_lib.train.config import SFTTrainConfig
    from recipe_lib.train.optim import lr_factor

    train = SFTTrainConfig(optm_warmup_steps=5, optm_decay_type="cosine", optm_decay_ratio=0.5, optm_min_lr_factor=0.1)
    f = [lr_factor(s, 20, train) for s in range(20)]
    assert f[0] == 0.0 and f[4] == 1.0 and f[2] == pytest.approx(0.5)
    assert f[5:10] == [1.0] * 5, "stable between warm-up and decay"
    assert f[10] == pytest.approx(1.0)
    assert f[19] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(0.9 * math.pi)))
    assert all(a >= b for a, b in zip(f[10:], f[11:])), "decay is monotone"
    flat = SFTTrainConfig(optm_warmup_steps=0.25)
    assert [lr_factor(s, 8, flat) for s in (0, 1, 2, 7)] == [0.0, 1.0, 1.0, 1.0]


def test_balanced_batches_hold_equal_label_shares():
    from recipe_lib.train.data_order import balanced_batches

    labels = [1] * 30 + [5] * 10
    plan = balanced_batches(labels, total_steps=12, batch=8, seed=3)
    assert plan == balanced_batches(labels, total_steps=12, batch=8, seed=3)
    for batch in plan:
        assert sum(labels[i] == 5 for i in batch) == 4
    # Within a pass over a label's samples none repeats.
    fives = [i for batch in plan[:2] for i in batch if labels[i] == 5]
    assert len(set(fives)) == len(fives) == 8


def test_epoch_order_is_seeded():
    from recipe_lib.train.data_order import batch_for_step, steps_per_epoch

    assert steps_per_epoch(10, 4) == 2 and steps_per_epoch(3, 4) == 1
    first = [batch_for_step(s, 10, 4, 0, True) for s in range(2)]
    assert first == [batch_for_step(s, 10, 4, 0, True) for s in range(2)]
    assert len(set(first[0]) | set(first[1])) == 8
    assert batch_for_step(2, 10, 4, 0, True) != first[0] or batch_for_step(3, 10, 4, 0, True) != first[1]
    assert batch_for_step(0, 10, 4, 0, False) == [0, 1, 2, 3]


# ---------------------------------------------------------------------------------------------------------------------
# checkpoints, resume, errors


def test_checkpoints_load_and_rotate(tiny_critic, sft_data, tmp_path):
    import torch

    from recipe_lib.models.loading import load_critic
    from recipe_lib.train.sft import train_sft

    cfg = _config(tmp_path, tiny_critic, sft_data, **{"local.max_steps": 6, "validation.enable": True})
    result = train_sft(cfg, progress=False)
    run = tmp_path / "run"
    assert [s for s, _ in result.checkpoints] == [4, 6], "max_keep 2 keeps the newest two step checkpoints"
    assert (run / "checkpoints" / "final" / "trainer_state.json").exists()
    assert json.loads((run / "checkpoints" / "final" / "trainer_state.json").read_text())["step"] == 6
    assert len(result.history) == 6 and {"loss", "lr", "grad_norm", "token_accuracy"} <= set(result.history[0])
    assert [e["step"] for e in result.evals] == [6] and result.evals[0]["n"] == 16
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    final = load_critic(run / "checkpoints" / "final", device="cpu", dtype="float32")
    start = load_critic(tiny_critic, device="cpu", dtype="float32")
    changed = [
        n
        for (n, a), (_, b) in zip(final.model.named_parameters(), start.model.named_parameters())
        if not torch.equal(a, b)
    ]
    assert changed, "the final checkpoint holds the trained weights"
    # Same settings again: the finished run is returned without training.
    again = train_sft(cfg, progress=False)
    assert again.trained_steps_now == 0 and again.steps == 6


def test_other_settings_in_the_same_folder_are_refused(tiny_critic, sft_data, tmp_path):
    from recipe_lib.errors import ConfigError
    from recipe_lib.train.sft import train_sft

    train_sft(_config(tmp_path, tiny_critic, sft_data, **{"local.max_steps": 1}), progress=False)
    other = _config(tmp_path, tiny_critic, sft_data, **{"local.max_steps": 1, "train.optm_lr": 5e-4})
    with pytest.raises(ConfigError, match="other settings .*train.optm_lr"):
        train_sft(other, progress=False)
    assert train_sft(other, progress=False, restart="changed").trained_steps_now == 1


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_sigkill_then_rerun_resumes_from_last_checkpoint(tiny_critic, sft_data, tmp_path):
    """Kill a CLI training run with SIGKILL after its first checkpoint; the rerun resumes there and ends with exactly
    the weights of an uninterrupted run (optimizer, scheduler, RNG and data position all restored)."""
    import torch

    base = [
        "--set", f"policy.model_name_or_path={tiny_critic}",
        "--set", f"custom.dataset.path={sft_data}",
        "--set", "validation.enable=false",
        "--set", "train.train_batch_per_replica=4",
        "--set", "train.train_policy.mini_batch=2",
        "--set", "train.ckpt.save_freq=2",
        "--set", "local.max_steps=10",
    ]  # fmt: skip
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    args = [sys.executable, "-m", "recipe_lib.cli", "train", "sft", "--config", "configs/demo/sft.toml", "--quiet"]
    proc = subprocess.Popen(
        [*args, *base, "--set", f"train.output_dir={killed_dir}"],
        cwd=REPO,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list((killed_dir / "checkpoints").glob("step_*/trainer_state.json")):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed_dir / "checkpoints" / "final").exists(), "killed before the end"
    resumed = run_cli(*args[3:], *base, "--set", f"train.output_dir={killed_dir}")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from step" in resumed.stdout
    clean = run_cli(*args[3:], *base, "--set", f"train.output_dir={clean_dir}")
    assert clean.returncode == 0, clean.stderr
    a, b = _weights(killed_dir / "checkpoints" / "final"), _weights(clean_dir / "checkpoints" / "final")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    history = [json.loads(line) for line in (killed_dir / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == list(range(1, 11)), "no step logged twice or lost"


def test_cli_errors_are_one_line(tmp_path):
    r = run_cli("train", "sft")
    assert r.returncode == 2 and "needs --config" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("train", "sft", "--config", "configs/demo/sft.toml", "--set", "train.optm_lrr=1")
    assert r.returncode == 2 and "unknown key 'optm_lrr'" in r.stderr and "optm_lr" in r.stderr
    r = run_cli("train", "sft", "--config", "configs/demo/sft.toml", "--set", "local.batch_order=sorted")
    assert r.returncode == 2 and "batch_order" in r.stderr
    r = run_cli(
        "train", "sft", "--config", "configs/demo/sft.toml", "--set", f"custom.dataset.path={tmp_path / 'none'}"
    )
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------------------------------
# LoRA


def test_lora_checkpoints_hold_the_adapter_and_load_merged(tiny_critic, sft_data, tmp_path):
    """A LoRA checkpoint is PEFT's adapter folder (no model weights), names its base, loads merged through
    load_critic, loads with plain PEFT, and resumes."""
    import torch
    from peft import PeftModel

    from recipe_lib.models.loading import load_critic
    from recipe_lib.train.sft import train_sft

    cfg = _config(
        tmp_path, tiny_critic, sft_data, **{"local.lora.enable": True, "local.lora.r": 4, "local.max_steps": 3}
    )
    result = train_sft(cfg, progress=False)
    assert result.steps == 3 and all(h["grad_norm"] > 0 for h in result.history)
    assert result.merged_dir is None, "no merged model unless asked"
    final = tmp_path / "run" / "checkpoints" / "final"
    for folder in (final, tmp_path / "run" / "checkpoints" / "step_000002"):
        names = {p.name for p in folder.iterdir()}
        assert {"adapter_config.json", "adapter_model.safetensors", "trainer_state.pt", "tokenizer.json"} <= names
        assert not any(n.startswith("model") and n.endswith(".safetensors") for n in names), names
    config = json.loads((final / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_critic) and config["r"] == 4
    weights = sum(p.stat().st_size for p in Path(tiny_critic).glob("*.safetensors"))
    assert (final / "adapter_model.safetensors").stat().st_size < weights / 50
    merged = load_critic(final, device="cpu", dtype="float32").model.state_dict()
    start = load_critic(tiny_critic, device="cpu", dtype="float32").model.state_dict()
    assert merged.keys() == start.keys()
    differs = {k for k in merged if not torch.equal(merged[k], start[k])}
    assert differs and all(k.split(".")[-2] in {"q_proj", "k_proj", "v_proj", "o_proj"} for k in differs), differs
    # Plain PEFT reads the same folder onto the base it names.
    base = load_critic(config["base_model_name_or_path"], device="cpu", dtype="float32").model
    plain = PeftModel.from_pretrained(base, str(final)).merge_and_unload().state_dict()
    assert all(torch.allclose(plain[k], merged[k]) for k in differs)
    # Resume from an adapter checkpoint continues the same run.
    more = _config(
        tmp_path, tiny_critic, sft_data, **{"local.lora.enable": True, "local.lora.r": 4, "local.max_steps": 4}
    )
    assert train_sft(more, progress=False).resumed_from == 3


# ---------------------------------------------------------------------------------------------------------------------
# learning, where it is reliable on a CPU


def test_answer_format_is_learned(tiny_critic, sft_data, tmp_path):
    """After a few dozen steps the untrained critic's babble becomes a well-formed ``<answer>`` reply."""
    from recipe_lib.inference.parsing import parse_answer
    from recipe_lib.models.loading import load_critic
    from recipe_lib.train.batching import ClipCache, Encoder, load_samples
    from recipe_lib.train.sft import train_sft

    def replies(model_dir: Path) -> list[str]:
        critic = load_critic(model_dir, device="cpu", dtype="float32")
        samples, _ = load_samples(sft_data)
        enc = Encoder(critic.processor)
        kept, clips, _ = ClipCache().fetch(samples[:4])
        inputs = enc.encode_prompts(kept, clips)
        out = critic.model.generate(**inputs, do_sample=False, max_new_tokens=12, pad_token_id=enc.pad_id)
        return critic.processor.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    before = replies(tiny_critic)
    assert not any(parse_answer(t).ok for t in before)
    cfg = _config(
        tmp_path,
        tiny_critic,
        sft_data,
        **{"local.max_steps": 40, "train.train_batch_per_replica": 8, "train.train_policy.mini_batch": 8},
    )
    train_sft(cfg, progress=False)
    after = replies(tmp_path / "run" / "checkpoints" / "final")
    assert all(parse_answer(t).ok and parse_answer(t).well_formed for t in after), after


@pytest.mark.slow
def test_penetration_is_learned(tiny_critic, tmp_path):
    """A violation visible in single frames — the ball sinking into the floor — against plausible clips of the same
    scenes: a few hundred steps take the held-out accuracy well above chance."""
    import datasets

    from recipe_lib.data.splits import stratified_split
    from recipe_lib.data.synthetic import SynthConfig, generate_clips
    from recipe_lib.train.sft import train_sft

    scenes = ["free_fall", "bounce", "slide_friction"]
    cfg = SynthConfig(n=160, out_dir=tmp_path / "clips", seed=5, style="contrast", scenes=scenes)
    cfg.violations = ["penetration"]
    synth = generate_clips(cfg)
    ds = datasets.load_from_disk(str(synth.dataset_dir))
    train, held_out = stratified_split(ds, eval_size=0.25, seed=0)
    train.save_to_disk(str(tmp_path / "train_raw"))
    held_out.save_to_disk(str(tmp_path / "eval_raw"))
    train_conv = _conversations(tmp_path / "train_raw", tmp_path / "train")
    eval_conv = _conversations(tmp_path / "eval_raw", tmp_path / "eval")
    train_cfg = _config(
        tmp_path,
        tiny_critic,
        train_conv,
        **{
            "custom.eval_dataset.path": str(eval_conv),
            "validation.enable": True,
            "validation.freq": 1000,
            "train.train_batch_per_replica": 16,
            "train.train_policy.mini_batch": 16,
            "train.ckpt.save_freq": 1000,
            "local.max_steps": 250,
        },
    )
    result = train_sft(train_cfg, progress=False)
    final = result.evals[-1]
    assert final["n"] == 40
    assert final["accuracy"] >= 0.8 and final["accuracy"] >= final["majority_accuracy"] + 0.25, final


def test_full_profile_renders_the_cosmos_rl_launch(tmp_path):
    """The full profile trains nothing here: it writes a cosmos-rl config checked by cosmos-rl and the launch line."""
    pytest.importorskip("cosmos_rl")
    import tomllib

    from recipe_lib.errors import RecipeError
    from recipe_lib.stages.grpo import GRPOStageConfig, run_grpo
    from recipe_lib.stages.sft import SFTStageConfig, run_sft

    data = tmp_path / "conversations"
    data.mkdir()
    sft = run_sft(SFTStageConfig(profile="full", dataset=str(data), n_gpus=4, out_dir=tmp_path / "sft"))
    assert sft.train is None and sft.plan is not None and sft.plan.config_path.exists()
    assert "--config" in sft.plan.command and "sft_entry.py" in sft.plan.command
    assert sft.metrics["command"] == sft.plan.command and "nothing is trained" in sft.report()
    rendered = tomllib.loads(sft.plan.config_path.read_text())
    assert rendered["policy"]["parallelism"]["dp_shard_size"] == 4
    assert rendered["custom"]["dataset"]["path"] == str(data.resolve())
    assert isinstance(sft.training_figure(), str) and isinstance(sft.sweep_figure(), str)
    grpo = run_grpo(GRPOStageConfig(profile="full", dataset=str(data), n_gpus=4, out_dir=tmp_path / "grpo"))
    assert "grpo_entry.py" in grpo.plan.command
    with pytest.raises(RecipeError, match="needs a conversation dataset"):
        run_sft(SFTStageConfig(profile="full", out_dir=tmp_path / "x"))
