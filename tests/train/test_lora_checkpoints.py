"""LoRA runs save adapters (PEFT's format), every reader takes them, the merged model is written once on request; a
run refuses to start without room for a checkpoint, a save the disk refuses keeps the last checkpoint; the GPU-memory
estimate names the mode that fits. All on the real tiny critic, real clips and real disks (a tmpfs mount)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO, run_cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

LORA = {"local.lora.enable": True, "local.lora.r": 4}


def _conversations(dataset_dir: Path, out: Path) -> Path:
    import datasets

    from recipe_lib.data.conversations import save_conversations, to_conversations
    from recipe_lib.demo import DEMO_PROMPT, binary_labels
    from recipe_lib.profiles import get_profile

    ds = binary_labels(datasets.load_from_disk(str(dataset_dir)))
    return save_conversations(to_conversations(ds, "sft", prompt=DEMO_PROMPT, video=get_profile("demo").video), out)


def _overrides(run: Path, model: Path, data: Path, **over: object) -> dict:
    return {
        "policy.model_name_or_path": str(model),
        "train.output_dir": str(run),
        "custom.dataset.path": str(data),
        "validation.enable": False,
        "train.train_batch_per_replica": 4,
        "train.train_policy.mini_batch": 4,
        "train.ckpt.save_freq": 1,
        "train.ckpt.max_keep": 2,
        "local.max_steps": 2,
        "local.num_workers": 1,
        **over,
    }


def _config(run: Path, model: Path, data: Path, **over: object):  # noqa: ANN202 - SFTConfig
    from recipe_lib.config import apply_overrides, load_toml
    from recipe_lib.train.config import training_config

    mapping = apply_overrides(load_toml(REPO / "configs/demo/sft.toml"), _overrides(run, model, data, **over))
    return training_config(mapping, "sft")


def _cli_sets(run: Path, model: Path, data: Path, **over: object) -> list[str]:
    sets = []
    for key, value in _overrides(run, model, data, **over).items():
        sets += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    return ["train", "sft", "--config", "configs/demo/sft.toml", "--quiet", *sets]


def _error_lines(r: subprocess.CompletedProcess) -> list[str]:
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return [line for line in r.stderr.splitlines() if line.startswith(("error:", "hint:"))]


def _state(folder: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


@pytest.fixture(scope="module")
def sft_data(synth_clips, tmp_path_factory) -> Path:
    return _conversations(synth_clips.dataset_dir, tmp_path_factory.mktemp("conv") / "sft")


@pytest.fixture(scope="module")
def lora_run(tiny_critic, sft_data, tmp_path_factory):  # noqa: ANN201 - TrainResult
    """Two LoRA steps, a checkpoint after each, the merged model written at the end."""
    from recipe_lib.train.sft import train_sft

    run = tmp_path_factory.mktemp("lora") / "run"
    return train_sft(_config(run, tiny_critic, sft_data, **LORA, **{"local.lora.merge_final": True}), progress=False)


# ---------------------------------------------------------------------------------------------------------------------
# the merged model, once


def test_merge_final_and_the_merge_command_write_the_same_model(lora_run, tiny_critic, tmp_path):
    import torch

    from recipe_lib.models.loading import load_critic

    merged = lora_run.run_dir / "merged"
    assert lora_run.merged_dir == merged and (merged / "config.json").is_file()
    assert not (merged / "adapter_config.json").exists() and (merged / "preprocessor_config.json").is_file()
    out = tmp_path / "full"
    r = run_cli("merge", str(lora_run.final_dir), "--out", str(out), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    a, b, start = _state(merged), _state(out), _state(Path(tiny_critic))
    assert a.keys() == b.keys() == start.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any(not torch.equal(a[k], start[k]) for k in a), "the adapter's change is in the merged weights"
    in_memory = load_critic(lora_run.final_dir, device="cpu", dtype="float32").model.state_dict()
    saved = load_critic(out, device="cpu", dtype="float32").model.state_dict()
    assert in_memory.keys() == saved.keys() and all(torch.allclose(in_memory[k], saved[k], atol=1e-6) for k in saved)
    assert not list(tmp_path.glob(".*.saving-*")), "the staging folder is gone"
    assert _error_lines(run_cli("merge", str(out), "--out", str(tmp_path / "again"))) == [
        f"error: {out} is a full model folder already: nothing to merge",
        "hint: pass a checkpoint folder that holds adapter_config.json (a LoRA run's checkpoints/step_N or final)",
    ]
    assert _error_lines(run_cli("merge", str(lora_run.final_dir), "--out", str(out)))[0] == (
        f"error: {out} already exists and is not empty"
    )


# ---------------------------------------------------------------------------------------------------------------------
# readers


def test_score_and_sweep_read_adapter_checkpoints(lora_run, synth_clips, tmp_path):
    from recipe_lib.profiles import is_demo_critic
    from recipe_lib.train.sweep import SweepConfig, sweep_checkpoints

    final = lora_run.final_dir
    assert is_demo_critic(final), "an adapter of the demo critic is scored with the demo settings"
    sweep = sweep_checkpoints(SweepConfig(run_dir=lora_run.run_dir, eval_data=str(synth_clips.dataset_dir), limit=4))
    assert [p.name for p in sweep.points] == ["start", "step_000001", "final"]
    assert sweep.mode == "expected" and all(p.scored == 4 for p in sweep.points)
    out = tmp_path / "scores"
    r = run_cli("score", str(synth_clips.dataset_dir), "--model", str(final), "--out", str(out), "--limit", "3")
    assert r.returncode == 0, r.stderr
    assert len((out / "scores.csv").read_text().strip().splitlines()) == 4


def test_adapter_base_from_run_json_and_a_missing_base(tiny_critic, sft_data, synth_clips, tmp_path):
    """A base path that no longer exists falls back to the run's run.json; with neither, one error naming both."""
    from recipe_lib.models.loading import load_critic
    from recipe_lib.train.sft import train_sft

    base = tmp_path / "base"
    shutil.copytree(tiny_critic, base)
    result = train_sft(_config(tmp_path / "run", base, sft_data, **LORA, **{"local.max_steps": 1}), progress=False)
    config_path = result.final_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = str(tmp_path / "moved")
    config_path.write_text(json.dumps(config))
    assert load_critic(result.final_dir, device="cpu").name == str(result.final_dir)
    shutil.rmtree(base)
    clips = str(synth_clips.dataset_dir)
    r = run_cli("score", clips, "--model", str(result.final_dir), "--out", str(tmp_path / "s"), "--limit", "1")
    message, hint = _error_lines(r)
    assert message == (
        f"error: the base model of the LoRA adapter {result.final_dir} is not there: {tmp_path / 'moved'} "
        f"(adapter_config.json); {base} ({tmp_path / 'run' / 'run.json'})"
    )
    assert "plausibility merge" in hint


# ---------------------------------------------------------------------------------------------------------------------
# disk


def _tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a small real disk here")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}): needs root where mounts are allowed")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _checkpoint_bytes(model: Path, lora: bool) -> int:
    from recipe_lib.models.loading import load_critic
    from recipe_lib.train.capacity import checkpoint_parts, footprint

    return sum(checkpoint_parts(footprint(load_critic(model, device="cpu").model), lora).values())


def test_a_disk_without_room_for_one_checkpoint_is_refused_before_training(tiny_critic, sft_data, tmp_path):
    disk = tmp_path / "disk"
    _tmpfs(disk, "8m")
    try:
        run = disk / "run"
        lines = _error_lines(run_cli(*_cli_sets(run, tiny_critic, sft_data)))
        assert lines[0].startswith(f"error: not enough free disk space for a checkpoint in {run}: ")
        need = _checkpoint_bytes(tiny_critic, lora=False)
        assert f"{need:,} bytes) needed".replace(",", " ") in lines[0], lines[0]
        assert "weights 3.33 MB" in lines[0] and "optimizer state 6.66 MB" in lines[0]
        assert "LoRA checkpoints (local.lora.enable=true) hold the adapter only" in lines[1]
        assert not (run / "history.jsonl").exists(), "no step ran"
    finally:
        _umount(disk)


@pytest.mark.slow  # about 50 s: eight checkpoints until the disk is full, then the rest of the run
def test_disk_full_mid_run_keeps_the_last_checkpoint_then_resumes(tiny_critic, sft_data, tmp_path):
    """Room for the start check and a few checkpoints, not for all (max_keep -1 keeps every one): the save that
    fills the disk is one error, its partial folder is gone, every checkpoint left is whole; with room again the same
    command resumes and finishes. Where tmpfs cannot be mounted, a real file-size limit (RLIMIT_FSIZE) refuses the
    first save instead."""
    from recipe_lib.train.checkpoint import load_trainer_state

    over = {"local.max_steps": 12, "train.ckpt.max_keep": -1}
    disk = tmp_path / "disk"
    try:
        _tmpfs(disk, str(_checkpoint_bytes(tiny_critic, lora=False) + (4 << 20)))
    except pytest.skip.Exception:
        _fsize_limited_save(tiny_critic, sft_data, tmp_path, over)
        return
    try:
        run = disk / "run"
        args = _cli_sets(run, tiny_critic, sft_data, **over)
        message, hint = _error_lines(run_cli(*args))
        kept = sorted((run / "checkpoints").glob("step_*"))
        assert 0 < len(kept) < 12
        failed = f"step_{int(kept[-1].name[5:]) + 1:06d}"
        assert message.startswith(f"error: no space left on the device while saving checkpoint {failed} in ")
        assert hint.startswith(f"hint: the last complete checkpoint ({kept[-1].name}) is kept; free some disk space")
        assert not list((run / "checkpoints").glob(".*")), "the partial folder is removed"
        assert all(load_trainer_state(k)["step"] == int(k.name[5:]) for k in kept)
        subprocess.run(["mount", "-o", "remount,size=256m", str(disk)], check=True)
        resumed = run_cli(*args)
        assert resumed.returncode == 0, resumed.stderr
        assert f"resumed from step {len(kept)}" in resumed.stdout
        history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
        assert [h["step"] for h in history] == list(range(1, 13))
    finally:
        _umount(disk)


def _fsize_limited_save(tiny_critic: Path, sft_data: Path, tmp_path: Path, over: dict) -> None:
    import resource

    limit = 1 << 20  # below the tiny critic's weights file (3.3 MB)

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    run = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "recipe_lib.cli", *_cli_sets(run, tiny_critic, sft_data, **over)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=apply,
    )
    message, hint = _error_lines(r)
    assert message.startswith("error: the file size limit was reached while saving checkpoint step_000001 in ")
    assert hint.startswith("hint: no checkpoint was kept; raise the file size limit")
    assert not list((run / "checkpoints").iterdir())


def test_no_checkpoint_at_all_when_checkpoints_are_off(tiny_critic, sft_data, tmp_path):
    from recipe_lib.train.sft import train_sft

    cfg = _config(tmp_path / "run", tiny_critic, sft_data, **{"train.ckpt.enable_checkpoint": False})
    result = train_sft(cfg, progress=False)
    assert result.steps == 2 and not (tmp_path / "run" / "checkpoints").exists()


# ---------------------------------------------------------------------------------------------------------------------
# GPU memory (the estimate and the messages; a CPU has no CUDA memory to run out of)


def test_memory_estimate_names_the_mode_that_fits(tiny_critic):
    from recipe_lib.errors import RecipeError
    from recipe_lib.models.loading import load_critic
    from recipe_lib.train.capacity import check_memory, footprint, human_bytes, lora_parameter_count

    model = load_critic(tiny_critic, device="cpu", dtype="float32").model
    fp = footprint(model)
    assert fp.params == 831_936 and fp.param_bytes == 4 * fp.params == fp.trainable_bytes
    n_lora = lora_parameter_count(model, ["q_proj", "k_proj", "v_proj", "o_proj"], 4)
    assert n_lora == 2 * 4 * ((128 + 128) + (128 + 64) + (128 + 64) + (128 + 128))  # 2 layers, kv heads 2 x 32
    full = 5 * fp.param_bytes  # weights, gradients, two AdamW moments, AdamW's step copy
    assert sum(check_memory(fp, full, "cuda:0", "full SFT", False, n_lora).values()) == full
    with pytest.raises(RecipeError) as caught:
        check_memory(fp, full - 1, "cuda:0 (test budget)", "full-parameter SFT", False, n_lora)
    err = caught.value
    assert err.message.startswith(f"full-parameter SFT needs about {human_bytes(full)} of GPU memory")
    assert f"more than the {human_bytes(full - 1)} of cuda:0 (test budget)" in err.message
    lora_need = fp.param_bytes + 5 * 4 * n_lora  # float32 adapters, their gradients, moments and step copy
    assert err.hint.startswith(f"local.lora.enable=true ({human_bytes(lora_need)} before activations: fits)")
    assert "local.dtype=bfloat16" in err.hint and "policy.model_gradient_checkpointing=true" in err.hint
    with pytest.raises(RecipeError, match="does not fit either"):
        check_memory(fp, 1 << 20, "cuda:0", "full-parameter GRPO", True, n_lora)


def test_memory_estimate_of_the_7b_shape(tmp_path):
    """The Qwen2.5-VL-7B shape from its config alone (meta device): full-parameter bf16 needs about 83 GB before
    activations (an H100 has 85.0 GB), float32 twice that, LoRA little more than the weights."""
    from recipe_lib.models.arch import save_random_critic
    from recipe_lib.train.capacity import mode_estimates
    from recipe_lib.train.config import LoraConfig

    folder = save_random_critic(tmp_path / "7b", weights=False)
    bf16 = mode_estimates(str(folder), "bfloat16", LoraConfig())
    assert bf16["params"] == 8_292_166_656 and bf16["weights_bytes"] == 2 * bf16["params"]
    assert bf16["full"]["bytes"] == 10 * bf16["params"] and 80e9 < bf16["full"]["bytes"] < 85e9
    assert bf16["lora"]["bytes"] < bf16["weights_bytes"] * 1.01
    grpo = mode_estimates(str(folder), "bfloat16", LoraConfig(), reference=True)
    assert grpo["full"]["bytes"] == 12 * grpo["params"], "GRPO's frozen reference copy on top"
    assert mode_estimates(str(folder), "float32", LoraConfig())["full"]["bytes"] == 20 * bf16["params"]


def test_out_of_memory_message_names_what_is_not_on_yet(tiny_critic, sft_data, tmp_path):
    from recipe_lib.train.capacity import out_of_memory_error

    cfg = _config(tmp_path / "run", tiny_critic, sft_data)
    err = out_of_memory_error(cfg, 1, "sft", "cuda:0", 80 << 30, 80 << 30)
    size = "85.90 GB (85 899 345 920 bytes)"
    assert err.message == f"cuda:0 ran out of memory at step 1 of this SFT run (peak {size} of {size})"
    for option in ("local.lora.enable=true", "policy.model_gradient_checkpointing=true", "mini_batch=2", "max_pixels"):
        assert option in err.hint
    lora = _config(tmp_path / "run", tiny_critic, sft_data, **LORA, **{"policy.model_gradient_checkpointing": True})
    hint = out_of_memory_error(lora, 3, "grpo", "cuda:0", 1, 2).hint
    assert "local.lora.enable" not in hint and "gradient_checkpointing" not in hint and "rollout." in hint


def test_one_gpu_configs_train_adapters_with_gradient_checkpointing():
    from recipe_lib.config import CONFIGS_DIR
    from recipe_lib.train.config import load_training_config

    for name, kind in (("sft_lora", "sft"), ("grpo_lora", "grpo")):
        cfg = load_training_config(CONFIGS_DIR / "one_gpu" / f"{name}.toml")
        assert cfg.kind == kind and cfg.local.lora.enable and cfg.policy.model_gradient_checkpointing
        assert (cfg.local.device, cfg.local.dtype) == ("cuda", "bfloat16")
