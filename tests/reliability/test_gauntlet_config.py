"""Configuration files and parameters: TOML typos and wrong types are one-line errors naming the key and its fix;
YAML and TOML values never construct objects or run code (a marker file shows whether a payload ran)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from gauntlet import error_lines

from support import REPO, run_cli

FULL_SFT = REPO / "configs" / "full" / "sft.toml"
# A small valid SFT config of our own (the shipped demo config is tuned over time; these tests need a fixed text).
BASE_SFT = """[policy]
model_name_or_path = "build/models/tiny-critic"

[train]
epoch = 3
output_dir = "build/train/sft"
optm_lr = 1e-3

[train.train_policy]
type = "sft"
mini_batch = 4

[custom.dataset]
path = "build/data/conversations/sft/train"

[local]
device = "cpu"
max_steps = 2
"""


@pytest.fixture
def base_sft(tmp_path) -> Path:
    from recipe_lib.train.config import load_sft_config

    path = tmp_path / "base.toml"
    path.write_text(BASE_SFT)
    load_sft_config(path)  # valid as written
    return path


def _edit(source: Path, target: Path, old: str, new: str) -> Path:
    text = source.read_text()
    assert old in text, f"{old!r} not in {source}"
    target.write_text(text.replace(old, new, 1))
    return target


@pytest.mark.parametrize(
    ("old", "new", "message", "hint"),
    [
        ("optm_lr = ", "optm_lrr = ", "unknown key 'optm_lrr'", "did you mean 'optm_lr'?"),
        ("[local]\n", "[locale]\n", "unknown key 'locale'", "did you mean 'local'?"),
        ("epoch = 3", 'epoch = "three"', "train.epoch: expected an integer, got 'three'", None),
        ("[policy]\n", "[policy\n", "not valid TOML (Expected ']' at the end of a table declaration", None),
    ],
    ids=["key_typo", "table_typo", "wrong_type", "malformed"],
)
def test_training_toml_mistakes_are_one_line_errors(old, new, message, hint, base_sft, tmp_path):
    config = _edit(base_sft, tmp_path / "sft.toml", old, new)
    r = run_cli("train", "sft", "--config", str(config))
    got, got_hint = error_lines(r)
    assert str(config) in got and message in got, got
    assert got_hint == hint


def test_training_config_loader_names_the_key(base_sft, tmp_path):
    from recipe_lib.errors import ConfigError
    from recipe_lib.train.config import load_sft_config

    config = _edit(base_sft, tmp_path / "sft.toml", "mini_batch = 4", "mini_bach = 4")
    with pytest.raises(ConfigError) as info:
        load_sft_config(config)
    assert "unknown key 'mini_bach'" in info.value.message and info.value.hint == "did you mean 'mini_batch'?"


def test_toml_values_stay_text(base_sft, tmp_path):
    """TOML has no tags or code: strings that look like YAML payloads or shell stay strings, nothing runs."""
    from recipe_lib.train.config import load_sft_config

    marker = tmp_path / "toml_payload_ran"
    payload = f"!!python/object/apply:os.system ['touch {marker}']"
    config = _edit(base_sft, tmp_path / "sft.toml", '"build/models/tiny-critic"', repr(payload))
    config = _edit(config, config, '"build/train/sft"', f'"$(touch {marker})"')
    cfg = load_sft_config(config)
    assert cfg.policy.model_name_or_path == payload and cfg.train.output_dir == f"$(touch {marker})"
    assert not marker.exists()


def test_notebook_parameters_are_read_safely(tmp_path):
    marker = tmp_path / "param_payload_ran"
    pair = f"profile=!!python/object/apply:os.system ['touch {marker}']"
    r = run_cli("notebooks", "run", "02", "-p", pair)
    assert error_lines(r) == (
        f"parameter '{pair}': the value is not a plain YAML value (line 1, column 1: could not determine a "
        "constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system')",
        "give numbers, true/false, strings or [lists]; tags such as !!python/... are refused",
    )
    assert not marker.exists()


def test_train_set_values_are_read_safely(base_sft, tmp_path):
    marker = tmp_path / "set_payload_ran"
    r = run_cli(
        "train", "sft", "--config", str(base_sft), "--set",
        f"policy.model_name_or_path=!!python/object/apply:os.system ['touch {marker}']",
    )  # fmt: skip
    assert not marker.exists()
    message, _ = error_lines(r)
    assert "policy.model_name_or_path" in message


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("cosmos_rl") is None, reason="cosmos-rl (the cosmos extra) not installed")
def test_cosmos_config_typo_is_a_one_line_error(tmp_path):
    config = _edit(FULL_SFT, tmp_path / "sft.toml", "\noptm_lr = ", "\noptm_lrr = ")
    r = run_cli("cosmos", "check", "--config", str(config), env={"COSMOS_LOG_LEVEL": "ERROR"})
    assert error_lines(r) == ("cosmos-rl does not know the key 'train.optm_lrr'", "did you mean 'optm_lr'?")
