"""The cosmos-rl path: shared training configs, shipped and rendered cosmos-rl configs (checked by the real
``cosmos_rl.policy.config.Config``), the datasets and rewards the entry scripts hand to cosmos-rl (run through
cosmos-rl's own Qwen2.5-VL data packer with the tiny critic and real clips), prerequisites and the launch command."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from recipe_lib.config import CONFIGS_DIR, REPO_ROOT, VideoSettings, load_toml
from recipe_lib.errors import ConfigError, DataError, RecipeError
from recipe_lib.train import cosmos
from recipe_lib.train.config import (
    GRPOConfig,
    SFTConfig,
    from_cosmos_mapping,
    load_grpo_config,
    load_sft_config,
    load_training_config,
    training_config,
)
from support import run_cli

DEMO_VIDEO = VideoSettings(fps=4.0, total_pixels=None, max_pixels=112 * 112, min_pixels=56 * 56, max_frames=8)


# ---------------------------------------------------------------------------------------------------------------------
# shared training configs (no cosmos-rl needed)


def test_demo_configs_load() -> None:
    sft = load_sft_config(CONFIGS_DIR / "demo" / "sft.toml")
    grpo = load_grpo_config(CONFIGS_DIR / "demo" / "grpo.toml")
    assert isinstance(sft, SFTConfig) and isinstance(grpo, GRPOConfig)
    assert sft.local.device == "cpu" and grpo.local.device == "cpu"
    assert sft.train.train_batch_per_replica % sft.train.train_policy.mini_batch == 0
    assert grpo.rollout.n_generation >= 2
    assert grpo.custom.reward.score == "dense"
    assert sft.optim.optm_lr == sft.train.optm_lr
    assert isinstance(load_training_config(CONFIGS_DIR / "demo" / "grpo.toml"), GRPOConfig)


def test_training_config_rejects_typos_and_bad_values() -> None:
    with pytest.raises(ConfigError, match="unknown key 'kl_bta'.*did you mean 'kl_beta'"):
        training_config({"train": {"train_policy": {"type": "grpo", "kl_bta": 0.1}}})
    with pytest.raises(ConfigError, match="cannot tell SFT from GRPO"):
        training_config({"train": {"epoch": 1}})
    with pytest.raises(ConfigError, match="not a multiple"):
        training_config({"train": {"train_batch_per_replica": 10, "train_policy": {"type": "sft"}}})
    with pytest.raises(ConfigError, match="n_generation"):
        training_config({"train": {"train_policy": {"type": "grpo"}}, "rollout": {"n_generation": 1}})
    with pytest.raises(ConfigError, match="custom.reward.score"):
        training_config({"train": {"train_policy": {"type": "grpo"}}, "custom": {"reward": {"score": "x"}}})
    with pytest.raises(ConfigError, match="optm_betas"):
        training_config({"train": {"train_policy": {"type": "sft"}, "optm_betas": [0.9, 1.5]}})


def test_full_configs_carry_the_recipe_numbers() -> None:
    """The shared subset of each shipped cosmos-rl config, read strictly, holds the recipe's values."""
    sft = from_cosmos_mapping(load_toml(CONFIGS_DIR / "full" / "sft.toml"), local={"device": "cuda"})
    assert isinstance(sft, SFTConfig)
    assert (sft.train.epoch, sft.train.train_batch_per_replica, sft.train.train_policy.mini_batch) == (10, 32, 4)
    assert sft.policy.model_max_length == 4096
    assert sft.custom.vision.fps == 16 and sft.custom.vision.total_pixels == 8192 * 28 * 28
    assert sft.local.device == "cuda"

    grpo = from_cosmos_mapping(load_toml(CONFIGS_DIR / "full" / "grpo.toml"))
    assert isinstance(grpo, GRPOConfig)
    t, p = grpo.train, grpo.train.train_policy
    assert (t.optm_lr, tuple(t.optm_betas), t.optm_weight_decay) == (2e-6, (0.9, 0.95), 0.01)
    assert (t.optm_warmup_steps, t.optm_grad_norm_clip, t.train_batch_per_replica) == (20, 1.0, 128)
    assert (p.kl_beta, p.temperature, p.epsilon_low, p.epsilon_high) == (0.05, 0.9, 0.2, 0.2)
    assert (grpo.rollout.n_generation, grpo.rollout.max_response_length) == (8, 6144)
    assert grpo.policy.model_max_length == 10240 and grpo.policy.model_gradient_checkpointing
    assert grpo.custom.vision.fps == 1 and grpo.custom.vision.max_pixels == 81920

    custom = from_cosmos_mapping(load_toml(CONFIGS_DIR / "full" / "custom_sft.toml"))
    assert (custom.validation.enable, custom.validation.freq) == (True, 50)
    assert (custom.train.ckpt.save_freq, custom.train.ckpt.max_keep) == (50, 5)


def test_parallelism_split() -> None:
    assert cosmos.parallelism_for("sft", 8)["policy"]["dp_shard_size"] == 8
    assert cosmos.parallelism_for("sft", 2)["policy"]["dp_shard_size"] == 2
    for n, half in ((8, 4), (4, 2), (2, 1)):
        split = cosmos.parallelism_for("grpo", n)
        assert split["policy"]["dp_shard_size"] == half and split["rollout"]["tp_size"] == half
    with pytest.raises(ConfigError, match="set_underlying_model"):  # cosmos-rl's colocated vLLM rollout, as run
        cosmos.parallelism_for("grpo", 1)
    for bad in (0, -2, 3, 6, 16):
        with pytest.raises(ConfigError):
            cosmos.parallelism_for("grpo" if bad > 0 else "sft", bad)
    with pytest.raises(ConfigError, match="unknown cosmos-rl config kind"):
        cosmos.parallelism_for("dpo", 8)


# ---------------------------------------------------------------------------------------------------------------------
# cosmos-rl's own Config


@pytest.fixture(scope="module")
def cosmos_config_cls():  # noqa: ANN201
    """Import cosmos-rl once for this module (~11 s)."""
    os.environ.setdefault("COSMOS_LOG_LEVEL", "WARNING")
    module = pytest.importorskip("cosmos_rl.policy.config", reason="cosmos-rl not installed (the 'cosmos' extra)")
    return module.Config


@pytest.mark.cosmos
@pytest.mark.parametrize("kind", cosmos.KINDS)
def test_shipped_configs_validate(cosmos_config_cls, kind: str) -> None:  # noqa: ANN001
    mapping = load_toml(CONFIGS_DIR / "full" / f"{kind}.toml")
    assert cosmos.unknown_keys(cosmos_config_cls, mapping) == [], "keys cosmos-rl would silently ignore"
    cfg = cosmos.validate_config(mapping)
    assert isinstance(cfg, cosmos_config_cls)
    assert cfg.train.train_policy.type == cosmos.training_kind(mapping)
    assert cfg.policy.model_name_or_path == "nvidia/Cosmos-Reason1-7B"
    assert mapping == load_toml(CONFIGS_DIR / "full" / f"{kind}.toml"), "validation must not modify the mapping"
    if kind == "grpo":
        p = cfg.train.train_policy
        assert (p.kl_beta, p.temperature, p.epsilon_low, p.epsilon_high) == (0.05, 0.9, 0.2, 0.2)
        assert (cfg.rollout.n_generation, cfg.rollout.max_response_length) == (8, 6144)
        assert cfg.rollout.sampling_config.temperature == 0.9
        assert (cfg.rollout.parallelism.tp_size, cfg.policy.parallelism.dp_shard_size) == (4, 4)
        assert cfg.train.optm_betas == (0.9, 0.95)
    else:
        assert cfg.policy.parallelism.dp_shard_size == 8 and cfg.policy.parallelism.tp_size == 1
        assert (cfg.train.epoch, cfg.train.train_batch_per_replica, cfg.train.train_policy.mini_batch) == (10, 32, 4)


@pytest.mark.cosmos
@pytest.mark.parametrize("kind", cosmos.KINDS)
@pytest.mark.parametrize("gpus", [8, 4, 2])
def test_renders_validate(cosmos_config_cls, kind: str, gpus: int, tmp_path: Path) -> None:  # noqa: ANN001
    data = tmp_path / "conversations"
    data.mkdir()
    rendered = cosmos.render_config(
        kind, model="my-org/critic", dataset=data, n_gpus=gpus, output_dir=tmp_path / "runs", eval_dataset=data
    )
    cfg = cosmos.validate_config(rendered)
    assert cosmos.gpus_needed(rendered) == gpus
    assert cfg.policy.model_name_or_path == "my-org/critic"  # not a local folder: a hub id, kept as given
    assert rendered["custom"]["dataset"]["path"] == str(data.resolve())
    assert cfg.validation.enable
    assert cfg.train.output_dir.startswith(str((tmp_path / "runs").resolve()))
    if kind == "grpo":
        assert cfg.policy.parallelism.dp_shard_size == gpus // 2
        assert cfg.rollout.parallelism.tp_size == gpus // 2
        assert cfg.train.fsdp_offload == (gpus == 2)
    else:
        assert cfg.policy.parallelism.dp_shard_size == gpus


@pytest.mark.cosmos
def test_validation_catches_what_cosmos_rl_ignores(cosmos_config_cls) -> None:  # noqa: ANN001
    # pydantic in cosmos-rl drops unknown keys; keys such as these appear in published configs and do nothing there.
    for table, key, value, hint in [
        ("train", "eval_steps", 50, None),
        ("train", "optm_rl", 1e-6, "optm_lr"),
        ("train.train_policy", "kl_bta", 0.05, "kl_beta"),
        ("policy.parallelism", "cp_rotate_method", "allgather", None),
    ]:
        mapping = cosmos.base_config("grpo")
        node = mapping
        for part in table.split("."):
            node = node[part]
        node[key] = value
        with pytest.raises(ConfigError, match=re.escape(f"'{table}.{key}'")) as info:
            cosmos.validate_config(mapping)
        if hint:
            assert hint in (info.value.hint or "")
    bad = cosmos.base_config("grpo")
    bad["custom"]["reward"]["scor"] = "dense"
    with pytest.raises(ConfigError, match="custom.reward: unknown key 'scor'"):
        cosmos.validate_config(bad)
    bad = cosmos.base_config("sft")
    bad["train"]["train_batch_per_replica"] = 30
    with pytest.raises(ConfigError, match="not a multiple"):
        cosmos.validate_config(bad)
    bad = cosmos.base_config("sft")
    bad["train"]["train_policy"]["type"] = "ppo"
    with pytest.raises(ConfigError, match="sft.*grpo"):
        cosmos.validate_config(bad)
    bad = cosmos.render_config("sft", validate=False)
    bad["validation"]["enable"] = True
    with pytest.raises(ConfigError, match="eval_dataset"):
        cosmos.validate_config(bad)


@pytest.mark.cosmos
def test_write_config_round_trips(cosmos_config_cls, tmp_path: Path) -> None:  # noqa: ANN001
    path = cosmos.write_config(tmp_path / "cfg", "grpo", dataset="data/grpo", n_gpus=4)
    assert path == tmp_path / "cfg" / "grpo_4gpu.toml"
    assert not list(path.parent.glob("*.tmp"))
    text = path.read_text()
    assert text.startswith("# cosmos-rl grpo config")
    loaded = load_toml(path)
    assert loaded == cosmos.render_config("grpo", dataset="data/grpo", n_gpus=4)
    cfg = cosmos.validate_config_file(path)
    assert cfg.rollout.parallelism.tp_size == 2
    explicit = cosmos.write_config(tmp_path / "x.toml", "sft")
    assert explicit == tmp_path / "x.toml" and explicit.is_file()


# ---------------------------------------------------------------------------------------------------------------------
# entry datasets and rewards with real clips, the tiny critic and cosmos-rl's Qwen2.5-VL data packer


@pytest.fixture(scope="module")
def conversation_sets(synth_clips, tmp_path_factory):  # noqa: ANN001, ANN201
    import datasets

    from recipe_lib.data.conversations import save_conversations, to_conversations

    clips = datasets.load_from_disk(str(synth_clips.dataset_dir)).select(range(4))
    out = tmp_path_factory.mktemp("cosmos_conv")
    sft = save_conversations(to_conversations(clips, "sft", video=DEMO_VIDEO), out / "sft")
    grpo = save_conversations(to_conversations(clips, "grpo", video=DEMO_VIDEO), out / "grpo")
    return {"clips": clips, "sft": sft, "grpo": grpo}


def _cosmos_cfg(kind: str, model: Path, dataset: Path, **custom):  # noqa: ANN003, ANN202
    from cosmos_rl.policy.config import Config

    mapping = cosmos.render_config(kind, model=model, dataset=dataset, n_gpus=2)
    mapping["custom"].update(custom)
    cosmos.validate_config(mapping)
    return Config.from_dict(copy.deepcopy(mapping))


@pytest.fixture(scope="module")
def packer_for(cosmos_config_cls):  # noqa: ANN001, ANN201
    from cosmos_rl.dispatcher.data.packer.qwen2_5_vlm_data_packer import Qwen2_5_VLM_DataPacker
    from cosmos_rl.utils.util import setup_tokenizer

    from recipe_lib.train.cosmos_entry.common import use_pyav_video_reader

    use_pyav_video_reader()  # as every cosmos-rl worker started from our entry scripts does before reading a clip

    def make(config):  # noqa: ANN001, ANN202
        packer = Qwen2_5_VLM_DataPacker()
        packer.setup(config, tokenizer=setup_tokenizer(config.policy.model_name_or_path))
        return packer

    return make


@pytest.mark.cosmos
def test_sft_dataset_through_cosmos_packer(conversation_sets, tiny_critic, packer_for) -> None:  # noqa: ANN001
    from recipe_lib.train.cosmos_entry.common import ConversationDataset

    # [custom.vision] fps 2 overrides the dataset's fps 4; the demo per-frame pixel bounds stay as written.
    config = _cosmos_cfg("sft", tiny_critic, conversation_sets["sft"], vision={"fps": 2.0})
    ds = ConversationDataset.from_cosmos_config(config, "sft")
    clips = conversation_sets["clips"]
    assert len(ds) == len(clips) == 4
    sample = ds[1]
    assert [m["role"] for m in sample] == ["system", "user", "assistant"]
    video = sample[1]["content"][0]
    assert video["type"] == "video" and video["video"] == clips[1]["video_url"] and Path(video["video"]).is_file()
    assert video["fps"] == 2.0 and video["max_pixels"] == 112 * 112 and video["min_pixels"] == 56 * 56
    assert "total_pixels" not in video
    label = clips[1]["pc"]
    assert sample[2]["content"] == f"<answer>\n{label}\n</answer>"  # a plain string, as the packer requires
    assert json.loads(ds.data[1]["conversations"])[1]["content"][0]["fps"] == 4.0  # the dataset is untouched

    packed = packer_for(config).sft_process_sample(sample)
    ids, labels = packed["input_ids"], packed["label_ids"]
    assert len(ids) == len(labels) and packed["pixel_values_videos"].shape[0] > 0
    tok = packer_for(config).tokenizer
    trained = tok.decode([i for i, lab in zip(ids, labels) if lab != -100])
    assert trained.startswith(f"<answer>\n{label}\n</answer>")  # only the answer (and end of turn) is learned
    assert ids.count(tok.convert_tokens_to_ids("<|video_pad|>")) == int(packed["video_grid_thw"].prod()) // 4


@pytest.mark.cosmos
def test_grpo_dataset_and_reward_through_cosmos(conversation_sets, tiny_critic, packer_for, model_outputs) -> None:  # noqa: ANN001
    from recipe_lib.train.cosmos_entry.common import ConversationDataset, plausibility_reward

    config = _cosmos_cfg(
        "grpo",
        tiny_critic,
        conversation_sets["grpo"],
        vision={"fps": 4.0},
        reward={"score": "linear", "format_weight": 0.5},
    )
    ds = ConversationDataset.from_cosmos_config(config, "grpo")
    clips = conversation_sets["clips"]
    prompt = ds[2]
    assert [m["role"] for m in prompt] == ["system", "user"]
    video = prompt[1]["content"][0]
    assert video["video"] == clips[2]["video_url"] and video["max_pixels"] == 112 * 112
    assert ds.get_reference_answer(2) == str(clips[2]["pc"])
    assert "<think>" in prompt[0]["content"][0]["text"]  # the GRPO rubric asks for reasoning

    packer = packer_for(config)
    rollout_input = packer.get_rollout_input(prompt)
    assert rollout_input["prompt"].rstrip().endswith("assistant")
    assert len(rollout_input["multi_modal_data"]["video"]) == 1
    completion = model_outputs["cosmos_reason1_pizza_after_rl_pred2_gt2.txt"]
    policy_input = packer.get_policy_input(prompt, rollout_output=completion)
    n_completion = len(packer.tokenizer(completion).input_ids)
    assert sum(policy_input["logprob_masks"]) == n_completion

    # The reward cosmos-rl calls: linear score + 0.5 x format, from [custom.reward]; parts logged per completion.
    kwargs = {"prompt": prompt, "data_packer": packer, "config": config, "tokenizer": packer.tokenizer}
    total, parts = plausibility_reward(completion, "2", **kwargs)
    assert (total, parts) == (1.5, {"score_reward": 1.0, "format_reward": 1.0})
    before = model_outputs["cosmos_reason1_pizza_before_rl_pred5_gt2.txt"]
    assert plausibility_reward(before, "2", **kwargs)[0] == pytest.approx(0.25 + 0.5)
    critic = model_outputs["cosmos_reason1_video_critic_generation_0.txt"]
    assert plausibility_reward(critic, ds.get_reference_answer(0), **kwargs)[0] == 0.0
    assert plausibility_reward(before, "2")[0] == 1.0  # no [custom.reward]: the default, dense (0 here) + 1.0 x format
    assert plausibility_reward(before, "4")[0] == 1.5
    assert plausibility_reward(completion, "4")[0] == 1.0


def test_dataset_errors(conversation_sets, tmp_path: Path) -> None:  # noqa: ANN001
    import datasets

    from recipe_lib.data.conversations import save_conversations, to_conversations
    from recipe_lib.train.cosmos_entry.common import ConversationDataset

    with pytest.raises(DataError, match="not found"):
        ConversationDataset(tmp_path / "nowhere", "sft")
    # GRPO conversations have no answer to train on.
    with pytest.raises(DataError, match="no assistant answer"):
        ConversationDataset(conversation_sets["grpo"], "sft")[0]
    with pytest.raises(DataError, match="GRPO datasets only"):
        ConversationDataset(conversation_sets["sft"], "sft").get_reference_answer(0)
    # A clip that went missing stops the run when the dataset opens.
    clips = conversation_sets["clips"]
    moved = clips.map(lambda row: {"video_url": row["video_url"].replace(".mp4", "_gone.mp4")}, keep_in_memory=True)
    gone = save_conversations(to_conversations(moved, "sft", video=DEMO_VIDEO), tmp_path / "gone")
    with pytest.raises(DataError, match="4 of 4 videos not found"):
        ConversationDataset(gone, "sft")
    # A dataset in the cookbook's form (conversations only): the GRPO label comes from the assistant answer.
    sft_rows = datasets.load_from_disk(str(conversation_sets["sft"]))
    bare = save_conversations(sft_rows.select_columns(["conversations"]), tmp_path / "bare")
    ds = ConversationDataset(bare, "grpo")
    assert [ds.get_reference_answer(i) for i in range(len(ds))] == [str(v) for v in clips["pc"]]
    assert [m["role"] for m in ds[0]] == ["system", "user"]
    with pytest.raises(ConfigError, match="unknown dataset kind"):
        ConversationDataset(conversation_sets["sft"], "dpo")


# ---------------------------------------------------------------------------------------------------------------------
# prerequisites, launch, entry script and CLI


def test_check_prerequisites_reports_this_machine() -> None:
    import torch

    pre = cosmos.check_prerequisites("grpo")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert pre.gpus == gpus
    assert pre.redis_server == shutil.which("redis-server")
    assert (pre.redis_server is None) == any("redis-server" in m for m in pre.missing)
    assert (gpus == 0) == any("CUDA GPUs" in m for m in pre.missing)
    assert pre.cosmos_rl is not None and Path(pre.cosmos_rl).name == "cosmos-rl"
    assert (not pre.vllm) == any("vllm" in m for m in pre.missing)
    assert not any("vllm" in m for m in cosmos.check_prerequisites("sft").missing)
    assert not any("flash" in m for m in pre.missing)  # optional: the entry scripts fall back to torch SDPA
    if gpus == 0:
        assert not pre.ok


@pytest.mark.cosmos
def test_launch_dry_run_gives_the_exact_command(cosmos_config_cls, conversation_sets, tmp_path: Path) -> None:  # noqa: ANN001
    path = cosmos.write_config(tmp_path / "sft.toml", "sft", dataset=conversation_sets["sft"], n_gpus=2)
    result = cosmos.launch(path, dry_run=True, log_dir=tmp_path / "logs")
    assert not result.ran and result.returncode is None
    assert result.command == [
        str(Path(sys.executable).parent / "cosmos-rl"),
        "--config",
        str(path.resolve()),
        "--log-dir",
        str((tmp_path / "logs").resolve()),
        str(REPO_ROOT / "recipe_lib" / "train" / "cosmos_entry" / "sft_entry.py"),
    ]
    assert result.env == {"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(REPO_ROOT)}
    assert result.command_line.endswith("sft_entry.py")
    env = result.environment()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(REPO_ROOT)
    grpo = cosmos.write_config(tmp_path / "grpo.toml", "grpo", dataset=conversation_sets["grpo"], n_gpus=2)
    assert cosmos.launch(grpo).command[-1].endswith("grpo_entry.py")

    absent = cosmos.write_config(tmp_path / "absent.toml", "custom_sft", dataset=tmp_path / "no_train", n_gpus=2)
    with pytest.raises(RecipeError, match="cannot launch cosmos-rl") as info:
        cosmos.launch(absent, dry_run=False)
    assert f"the dataset {tmp_path / 'no_train'}" in info.value.message
    assert "the eval dataset data/custom_split/eval" in info.value.message  # validation on, eval split not built

    if cosmos.check_prerequisites("sft", 2).ok:
        pytest.skip("this machine could really launch: not starting a training run from a test")
    with pytest.raises(RecipeError, match="cannot launch cosmos-rl: missing") as info:
        cosmos.launch(path, dry_run=False)
    for item in cosmos.check_prerequisites("sft", 2).missing:
        assert item in info.value.message


@pytest.mark.cosmos
def test_entry_main_stops_on_a_bad_dataset(cosmos_config_cls, tiny_critic, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from recipe_lib.train.cosmos_entry.common import main

    bad = cosmos.write_config(tmp_path / "bad.toml", "sft", model=tiny_critic, dataset=tmp_path / "missing")
    with pytest.raises(SystemExit) as info:
        main("sft", ["--config", str(bad), "--port", "8000"])  # extra launcher arguments are tolerated
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("error: conversation dataset not found")


@pytest.mark.cosmos
@pytest.mark.slow
def test_entry_script_runs_as_cosmos_rl_runs_it(conversation_sets, tiny_critic, tmp_path: Path) -> None:  # noqa: ANN001
    """``python <entry>.py --config X`` from elsewhere: it imports recipe_lib, opens and checks the dataset, then hands
    over to cosmos-rl's worker entry, which needs the COSMOS_ROLE its launcher sets."""
    good = cosmos.write_config(tmp_path / "good.toml", "sft", model=tiny_critic, dataset=conversation_sets["sft"])
    env = {k: v for k, v in os.environ.items() if k not in ("COSMOS_ROLE", "PYTHONPATH")}
    env["COSMOS_LOG_LEVEL"] = "WARNING"
    ran = subprocess.run(
        [sys.executable, str(cosmos.ENTRIES["sft"]), "--config", str(good)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert ran.returncode != 0
    assert "Invalid role: None" in ran.stderr  # reached cosmos_rl.launcher.worker_entry.main
    assert "error:" not in ran.stderr  # the dataset, its labels and clips passed the checks
    from recipe_lib.train.cosmos_entry.sdpa_attention import flash_attn_installed

    stand_in = "flash-attn is not installed: cosmos-rl's attention runs on torch SDPA"
    assert (stand_in in ran.stdout) == (not flash_attn_installed())  # installed before cosmos-rl builds the model


def test_cli_check_lists_what_is_missing() -> None:
    proc = run_cli("cosmos", "check", "--kind", "grpo")
    pre = cosmos.check_prerequisites("grpo")
    assert proc.returncode == (0 if pre.ok else 1), proc.stderr
    assert f"CUDA GPUs: {pre.gpus}" in proc.stdout
    assert f"redis-server: {pre.redis_server or 'not found'}" in proc.stdout
    assert f"flash-attn: {'installed' if pre.flash_attn else 'not installed (' + cosmos.SDPA_NOTE + ')'}" in proc.stdout
    for item in pre.missing:
        assert f"missing: {item}" in proc.stdout


@pytest.mark.cosmos
@pytest.mark.slow
def test_cli_render_and_launch(conversation_sets, tmp_path: Path) -> None:  # noqa: ANN001
    pytest.importorskip("cosmos_rl", reason="cosmos-rl not installed (the 'cosmos' extra)")
    proc = run_cli(
        "cosmos", "render", "--kind", "grpo", "--gpus", "4", "--dataset", str(conversation_sets["grpo"]),
        "--out", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "grpo_4gpu.toml"
    assert f"wrote {path} (4 GPUs; valid for cosmos-rl)" in proc.stdout
    assert load_toml(path)["rollout"]["parallelism"]["tp_size"] == 2
    proc = run_cli("cosmos", "launch", str(path))
    assert proc.returncode == 0, proc.stderr
    assert f"--config {path} " in proc.stdout and "grpo_entry.py" in proc.stdout and "dry run" in proc.stdout
    proc = run_cli("cosmos", "render", "--kind", "grpo", "--gpus", "3", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-2:] == [
        "error: GRPO needs 2, 4 or 8 GPUs on one node, got 3",
        "hint: half the GPUs train the policy and half generate rollouts (vLLM tensor parallel 1, 2 or 4)",
    ]
    proc = run_cli(
        "cosmos", "render", "--kind", "sft", "--gpus", "1", "--out", str(tmp_path / "smoke.toml"),
        "--set", "train.max_num_steps=10", "--set", "custom.vision.fps=4",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    smoke = load_toml(tmp_path / "smoke.toml")
    assert smoke["train"]["max_num_steps"] == 10 and smoke["custom"]["vision"]["fps"] == 4
    proc = run_cli("cosmos", "render", "--kind", "sft", "--out", str(tmp_path), "--set", "train.max_num_stepz=10")
    assert proc.returncode == 2 and "cosmos-rl does not know the key 'train.max_num_stepz'" in proc.stderr


def test_launch_gives_cosmos_rl_a_python(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """cosmos-rl's scripts call plain ``python``: next to a venv's interpreter it exists; on a machine with only
    ``python3`` the launch puts a link named ``python`` first on PATH."""
    import subprocess
    import sys

    assert cosmos.python_dir(tmp_path) == Path(sys.executable).parent  # this venv has its python
    lone = tmp_path / "only3"
    lone.mkdir()
    (lone / "python3").symlink_to(Path(sys.executable).resolve())
    monkeypatch.setattr(sys, "executable", str(lone / "python3"))
    shim = cosmos.python_dir(tmp_path / "logs")
    assert shim == tmp_path / "logs" / "bin" and (shim / "python").resolve() == (lone / "python3").resolve()
    out = subprocess.run([str(shim / "python"), "-c", "print('ok')"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
    assert cosmos.launch_env(tmp_path / "logs")["PATH"] == str(shim)


def test_cosmos_workers_read_videos_with_pyav(synth_clips) -> None:  # noqa: ANN001
    """cosmos-rl's packer reads clips through qwen-vl-utils, whose last-resort reader is torchvision.io.read_video —
    gone from the torchvision that CUDA machines have (it stopped the first cosmos-rl SFT run on an H200). The entry
    scripts register a PyAV reader; the frames qwen-vl-utils then gets follow its own fps sampling."""
    import torchvision.io
    from qwen_vl_utils import process_vision_info, vision_process

    from recipe_lib.train.cosmos_entry.common import use_pyav_video_reader
    from recipe_lib.video import probe

    clip = sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[0]
    took_over = use_pyav_video_reader()
    assert took_over == (not hasattr(torchvision.io, "read_video"))
    if not took_over:
        pytest.skip("this torchvision still has read_video: qwen-vl-utils reads videos itself")
    assert vision_process.get_video_reader_backend() == "pyav"
    info = probe(clip)
    message = [
        {
            "role": "user",
            "content": [{"type": "video", "video": str(clip), "fps": 4.0, "max_pixels": 12544, "min_pixels": 3136}],
        }
    ]
    _, videos, kwargs = process_vision_info(message, return_video_kwargs=True)
    (video,) = videos
    expected = round(info.frames / info.fps * 4.0 / 2) * 2  # 4 fps over the clip, an even count (temporal patch 2)
    assert video.shape[0] == max(expected, 4) and video.shape[1] == 3
    assert video.shape[2] * video.shape[3] <= 12544 and video.dtype.is_floating_point
    assert kwargs["fps"] == [pytest.approx(video.shape[0] / info.frames * info.fps)]
