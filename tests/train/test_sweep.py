"""Checkpoint sweep over a real short training run: every checkpoint scored (cached), curves plotted with the published
reference lines, the CLI; and the notebooks 03/04 end to end (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import REPO, run_cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def short_run(tiny_critic, synth_clips, tmp_path_factory) -> tuple[Path, Path]:
    import datasets

    from recipe_lib.config import apply_overrides, load_toml
    from recipe_lib.data.conversations import save_conversations, to_conversations
    from recipe_lib.demo import DEMO_PROMPT, binary_labels
    from recipe_lib.profiles import get_profile
    from recipe_lib.train.config import training_config
    from recipe_lib.train.sft import train_sft

    tmp = tmp_path_factory.mktemp("sweep")
    ds = binary_labels(datasets.load_from_disk(str(synth_clips.dataset_dir)))
    conv = to_conversations(ds, "sft", prompt=DEMO_PROMPT, video=get_profile("demo").video)
    data = save_conversations(conv, tmp / "d")
    over = {
        "policy.model_name_or_path": str(tiny_critic),
        "train.output_dir": str(tmp / "run"),
        "custom.dataset.path": str(data),
        "validation.enable": False,
        "train.train_batch_per_replica": 4,
        "train.train_policy.mini_batch": 4,
        "train.ckpt.save_freq": 2,
        "train.ckpt.max_keep": 5,
        "local.max_steps": 5,
    }
    train_sft(training_config(apply_overrides(load_toml(REPO / "configs/demo/sft.toml"), over), "sft"), progress=False)
    return tmp / "run", data


def test_sweep_scores_every_checkpoint_and_caches(short_run):
    from matplotlib.figure import Figure

    from recipe_lib.demo import DEMO_PROMPT
    from recipe_lib.train.sweep import PUBLISHED, SweepConfig, plot_sweep, run_checkpoints, sweep_checkpoints

    run_dir, data = short_run
    assert [(s, n) for s, n, _ in run_checkpoints(run_dir)] == [(2, "step_000002"), (4, "step_000004"), (5, "final")]
    cfg = SweepConfig(run_dir=run_dir, eval_data=str(data), prompt=DEMO_PROMPT, batch_size=8)
    result = sweep_checkpoints(cfg, progress=False)
    assert [p.name for p in result.points] == ["start", "step_000002", "step_000004", "final"]
    assert [p.step for p in result.points] == [0, 2, 4, 5]
    for p in result.points:
        assert p.scored == 16 and p.skipped == 0 and p.metrics["n"] == 16 and p.metrics["coverage"] == 1.0
        assert 0 <= p.metrics["accuracy"] <= 1
    assert result.points[0].metrics["majority_accuracy"] == result.points[-1].metrics["majority_accuracy"]
    again = sweep_checkpoints(cfg, progress=False)
    assert all(p.from_cache == 16 for p in again.points), "a rerun scores nothing again"
    assert [p.metrics["accuracy"] for p in again.points] == [p.metrics["accuracy"] for p in result.points]
    assert (result.out_dir / "sweep.json").exists()
    fig = plot_sweep(result)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    labels = [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]
    for name, _metric, value in PUBLISHED:
        assert any(name in label and f"{value:.3f}" in label and "published" in label for label in labels), name
    assert any("Cosmos-Reason1-7B on VideoPhy-2" in t.get_text() for t in fig.texts)
    frame = result.frame()
    assert list(frame["checkpoint"]) == ["start", "step_000002", "step_000004", "final"]


def test_sweep_rejects_a_prompt_the_run_did_not_use(short_run):
    from recipe_lib.errors import ConfigError
    from recipe_lib.train.sweep import SweepConfig, sweep_checkpoints

    run_dir, data = short_run
    with pytest.raises(ConfigError, match="another prompt"):
        sweep_checkpoints(SweepConfig(run_dir=run_dir, eval_data=str(data), prompt="video_reward"), progress=False)


def test_sweep_cli(short_run, tmp_path):
    run_dir, data = short_run
    r = run_cli("sweep", str(run_dir), "--data", str(data), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "final" in r.stdout and "step_000004" in r.stdout and "accuracy" in r.stdout
    assert (run_dir / "sweep" / "sweep.png").stat().st_size > 1000
    r = run_cli("sweep", str(tmp_path), "--data", str(data))
    assert r.returncode == 2 and "not a training run folder" in r.stderr


@pytest.mark.slow
def test_notebook_03_sft_learns():
    from test_notebooks import image_outputs

    from recipe_lib.notebooks import run_notebook

    run = run_notebook("03_sft")
    m = run.metrics
    assert m["profile"] == "demo" and m["steps"] >= 100
    assert m["sft_accuracy"] >= m["majority_accuracy"] + 0.05, m
    assert m["sft_accuracy"] >= m["untrained_accuracy"] + 0.05, m
    assert m["sft_coverage"] == 1.0
    assert (Path(m["final_dir"]) / "trainer_state.json").exists()
    assert image_outputs(run.output) >= 3


@pytest.mark.slow
def test_notebook_04_grpo_raises_reward():
    from test_notebooks import image_outputs

    from recipe_lib.notebooks import run_notebook

    run = run_notebook("04_rl_grpo")
    m = run.metrics
    assert m["profile"] == "demo" and m["steps"] >= 50
    assert m["reward_last"] > m["reward_first"] + 0.02, m
    assert 0.1 <= m["signal_fraction"] <= 1.0
    assert image_outputs(run.output) >= 2


def test_sweep_finds_cosmos_rl_exports(short_run, tmp_path):
    """A cosmos-rl run keeps its exported checkpoints as <output_dir>/<timestamp>/safetensors/step_N."""
    import shutil

    from recipe_lib.errors import DataError
    from recipe_lib.train.sweep import SweepConfig, run_checkpoints, sweep_checkpoints

    run_dir, data = short_run
    root = tmp_path / "outputs"
    for step in (10, 5):
        shutil.copytree(run_dir / "checkpoints" / "final", root / "20260101120000" / "safetensors" / f"step_{step}")
    found = run_checkpoints(root)
    assert [(s, n) for s, n, _ in found] == [(5, "20260101120000_step_5"), (10, "20260101120000_step_10")]
    result = sweep_checkpoints(SweepConfig(run_dir=root, eval_data=str(data), batch_size=8), progress=False)
    assert [p.name for p in result.points] == ["20260101120000_step_5", "20260101120000_step_10"]
    assert result.points[0].metrics == result.points[1].metrics, "the same weights score the same"
    (root / "20260101120000" / "safetensors" / "step_5" / "preprocessor_config.json").unlink()
    with pytest.raises(DataError, match="no processor files"):
        sweep_checkpoints(SweepConfig(run_dir=root, eval_data=str(data)), progress=False)
