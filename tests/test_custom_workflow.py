"""Notebook 05's full profile: nothing trains here; a validated cosmos-rl custom_sft config and its command."""

import importlib.util

import pytest

from recipe_lib.errors import ConfigError
from recipe_lib.profiles import get_profile
from recipe_lib.prompts import load_prompt
from recipe_lib.stages.custom_data import CustomTrainConfig, run_custom_data


def test_training_prompt_per_profile():
    assert load_prompt(get_profile("demo").prompt).user_prompt  # the compact demo rubric loads
    assert get_profile("full").prompt == "video_reward"


def test_unknown_profile(tmp_path):
    with pytest.raises(ConfigError, match="unknown profile"):
        run_custom_data(CustomTrainConfig(tmp_path, tmp_path, tmp_path, profile="huge"))


@pytest.mark.cosmos
@pytest.mark.skipif(importlib.util.find_spec("cosmos_rl") is None, reason="cosmos-rl (the cosmos extra) not installed")
def test_full_profile_renders_custom_sft(tmp_path):
    result = run_custom_data(CustomTrainConfig(
        train_conversations=tmp_path / "train", eval_conversations=tmp_path / "eval", eval_data=tmp_path / "split",
        profile="full", n_gpus=4, out_dir=tmp_path / "out",
    ))  # fmt: skip
    assert result.profile == "full" and result.train is None
    config = tmp_path / "out" / "cosmos" / "custom_sft_4gpu.toml"
    assert config.exists() and str(tmp_path / "train") in config.read_text()
    assert "cosmos-rl" in result.command and str(config) in result.command
    assert any("GPU" in m for m in result.missing)  # this machine has none
