"""Checkpoint sweep over a real short training run: every checkpoint scored (cached), curves plotted with the published
reference lines, the CLI; and the notebooks 03/04 end to end (slow)."""

from __future__ import annotations

import json
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
    assert result.run_kind == "sft" and result.run_kind_source == "run.json"
    for p in PUBLISHED:
        drawn = any(p.label in label and f"{p.value:.3f}" in label and p.cite in label for label in labels)
        assert drawn == (p.stage != "grpo"), p  # an SFT run is drawn against the zero-shot, SFT and baseline figures
    assert any("real 7B critics on VideoPhy-2" in t.get_text() for t in fig.texts)
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
    """Notebook 03 as the demo runs it: 300 steps, checkpoints every 50, a sweep of them all, and the critic clearly
    above the majority class (0.83 against 0.51 on 2 cores, 2026-12-02)."""
    from test_notebooks import image_outputs

    from recipe_lib.notebooks import run_notebook

    run = run_notebook("03_sft", html=False)
    m = run.metrics
    assert m["profile"] == "demo" and m["steps"] == 300
    assert m["checkpoints"] == ["start", *(f"step_{s:06d}" for s in range(50, 300, 50)), "final"]
    assert m["untrained_accuracy"] == 0.0 and m["loss_last"] < m["loss_first"]
    assert m["sft_accuracy"] >= m["majority_accuracy"] + 0.15, m
    assert m["sft_coverage"] == 1.0
    assert (Path(m["final_dir"]) / "trainer_state.json").exists()
    assert image_outputs(run.output) >= 3


@pytest.mark.slow
def test_notebook_04_grpo_raises_reward():
    """Notebook 04 as the demo runs it, from notebook 03's checkpoint (the test above; run alone, the notebook trains
    it first): 100 GRPO steps raise the mean reward by more than its standard error, and both ends are swept."""
    from test_notebooks import image_outputs

    from recipe_lib.notebooks import run_notebook

    run = run_notebook("04_rl_grpo", html=False)
    m = run.metrics
    assert m["profile"] == "demo" and m["steps"] == 100 and m["start_model"].endswith("checkpoints/final")
    assert m["reward_last"] > m["reward_first"] + 2 * m["reward_gain_se"], m
    assert 0.1 <= m["signal_fraction"] <= 1.0
    assert m["start_accuracy"] is not None and m["grpo_accuracy"] is not None
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


def test_sweep_mode_generate_records_settings_and_sources(short_run):
    """--mode generate samples answers (the demo critic's 16-token budget, the recipe's temperature) and the summary
    says how every checkpoint was scored; auto keeps the fast expected score for the demo critic."""
    from recipe_lib.demo import DEMO_PROMPT
    from recipe_lib.train.sweep import SweepConfig, sweep_checkpoints

    run_dir, data = short_run
    auto = sweep_checkpoints(
        SweepConfig(run_dir=run_dir, eval_data=str(data), limit=2, out_dir=run_dir / "sw_auto"), progress=False
    )
    assert auto.mode == "expected" and auto.mode_source.startswith("auto: the demo critic")
    assert auto.prompt.endswith(f"{DEMO_PROMPT}.yaml") and auto.prompt_source == "training conversations"
    for p in auto.points:
        assert p.settings["sampling"] is None and p.settings["video_source"] == "eval conversations"
    cfg = SweepConfig(
        run_dir=run_dir, eval_data=str(data), mode="generate", limit=2, include_start=False, out_dir=run_dir / "sw_gen"
    )
    result = sweep_checkpoints(cfg, progress=False)
    assert result.mode == "generate" and result.mode_source == "flag"
    for p in result.points:
        assert p.settings["critic"] == "demo" and p.settings["sampling"]["max_new_tokens"] == 16
        assert p.settings["sampling"]["temperature"] == 0.6 and p.settings["sampling_source"] == "critic"
        assert p.scored == 2 and 0 <= p.unparsed <= 2
    summary = json.loads((result.out_dir / "sweep_summary.json").read_text())
    assert summary["mode"] == "generate" and summary["run_kind"] == "sft" and summary["run_kind_source"] == "run.json"
    assert summary["settings"]["video"]["fps"] == 4.0 and len(summary["points"]) == len(result.points)
    assert any(line.startswith("sampling: temperature 0.6") for line in result.summary_lines())


def test_sweep_of_other_critics_samples_like_the_recipe(short_run, tmp_path):
    """Checkpoints that are not the demo critic (a cosmos-rl export layout, config key removed): auto samples answers
    with the recipe's settings; a GRPO run is scored with the thinking prompt and drawn against the GRPO figures."""
    import shutil

    from matplotlib.figure import Figure

    from recipe_lib.constants import published
    from recipe_lib.demo import DEMO_PROMPT
    from recipe_lib.errors import ConfigError
    from recipe_lib.train.sweep import SweepConfig, plot_sweep, sweep_checkpoints

    run_dir, data = short_run
    root = tmp_path / "outputs"
    step = root / "20260101120000" / "safetensors" / "step_10"
    shutil.copytree(run_dir / "checkpoints" / "final", step)
    config = json.loads((step / "config.json").read_text())
    del config["plausibility_demo_critic"]
    (step / "config.json").write_text(json.dumps(config))
    quick = {"max_new_tokens": 8}  # the recipe's 4096 new tokens do not fit the tiny critic's 4096-token context
    sft = sweep_checkpoints(
        SweepConfig(run_dir=root, eval_data=str(data), limit=2, sampling_overrides=quick, prompt=DEMO_PROMPT),
        progress=False,
    )
    assert sft.mode == "generate" and sft.mode_source == "auto: the recipe scores checkpoints by sampling answers"
    assert sft.run_kind == "sft" and sft.run_kind_source.startswith("assumed")
    s = sft.points[0].settings
    assert s["critic"] == "recipe" and s["sampling"]["top_k"] == 50 and s["sampling"]["repetition_penalty"] == 1.05
    assert s["sampling_from"]["max_new_tokens"] == "flag" and s["video_source"] == "eval conversations"
    grpo = sweep_checkpoints(
        SweepConfig(run_dir=root, eval_data=str(data), limit=2, sampling_overrides=quick, run_kind="grpo"),
        progress=False,
    )
    assert grpo.run_kind == "grpo" and grpo.run_kind_source == "flag"
    assert grpo.prompt == "video_reward_with_thinking" and "thinking" in grpo.prompt_source
    fig = plot_sweep(grpo)
    assert isinstance(fig, Figure)
    labels = [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]
    for p in published(stage="grpo"):
        assert any(f"{p.value:.3f}" in label for label in labels), p
    with pytest.raises(ConfigError, match="records a sft run"):
        sweep_checkpoints(SweepConfig(run_dir=run_dir, eval_data=str(data), run_kind="grpo"), progress=False)


def test_sweep_cli_mode_and_flags(short_run):
    run_dir, data = short_run
    r = run_cli(
        "sweep", str(run_dir), "--data", str(data), "--quiet", "--mode", "generate", "--max-new-tokens", "4",
        "--limit", "2", "--no-start",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "mode generate (flag)" in r.stdout and "max_new_tokens 4" in r.stdout and "from critic" in r.stdout
    assert (run_dir / "sweep" / "sweep_summary.json").is_file()
    r = run_cli("sweep", str(run_dir), "--data", str(data), "--temperature", "-1")
    assert r.returncode == 2 and "--temperature -1 is not allowed" in r.stderr
