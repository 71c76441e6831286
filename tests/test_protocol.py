"""The recipe's protocol: video and sampling settings follow the critic (the demo critic is recognised by the key its
builder writes into config.json), explicit settings win, and every summary and report says what was used and where it
came from; the published figures table; prompt files given by path. Real tiny critic, real mp4 clips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from support import run_cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

RECIPE_TOTAL_PIXELS = 8192 * 28 * 28


def _clips(synth_clips, n: int) -> list[str]:  # noqa: ANN001
    return [str(p) for p in sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[:n]]


@pytest.fixture(scope="module")
def critics(tiny_critic, tmp_path_factory) -> dict[str, Path]:
    """The demo critic, a copy of its folder elsewhere without the builder's marker file, and a copy whose config.json
    lacks the key: to this project that last one is any other critic (a real Qwen2.5-VL all the same)."""
    tmp = tmp_path_factory.mktemp("critics")
    copy = tmp / "copied-demo"
    shutil.copytree(tiny_critic, copy)
    (copy / "tiny_critic.json").unlink()
    other = tmp / "other"
    shutil.copytree(copy, other)
    config = json.loads((other / "config.json").read_text())
    del config["plausibility_demo_critic"]
    (other / "config.json").write_text(json.dumps(config))
    return {"demo": Path(tiny_critic), "copy": copy, "other": other}


def test_the_demo_critic_is_recognised_wherever_it_lies(critics, tmp_path):
    from recipe_lib.profiles import demo_critic_reason, is_demo_critic

    assert is_demo_critic(critics["demo"]) and is_demo_critic(critics["copy"])
    assert "config.json carries plausibility_demo_critic" in demo_critic_reason(critics["copy"])
    assert not is_demo_critic(critics["other"])
    assert not is_demo_critic("nvidia/Cosmos-Reason1-7B"), "a hub id is never the demo critic"
    assert not is_demo_critic(tmp_path / "missing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    assert not is_demo_critic(broken), "a broken config is for load_critic to report, not a demo critic"
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert not is_demo_critic(loop)
    # An older build without the key still counts through the builder's marker file.
    legacy = tmp_path / "legacy"
    shutil.copytree(critics["other"], legacy)
    shutil.copy(critics["demo"] / "tiny_critic.json", legacy / "tiny_critic.json")
    assert "tiny_critic.json" in demo_critic_reason(legacy)


def test_checkpoints_trained_from_the_demo_critic_keep_the_key(critics, tmp_path):
    """save_pretrained of a loaded demo critic (what every checkpoint is) keeps the key in config.json."""
    from recipe_lib.models.loading import load_critic
    from recipe_lib.profiles import is_demo_critic

    critic = load_critic(str(critics["copy"]), device="cpu", dtype="float32")
    critic.model.save_pretrained(tmp_path / "ckpt")
    critic.processor.save_pretrained(tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text()).get("plausibility_demo_critic")
    assert is_demo_critic(tmp_path / "ckpt")


def test_critic_settings_are_the_demo_or_the_recipe(critics):
    from recipe_lib.demo import DEMO_READ_SIZE
    from recipe_lib.profiles import critic_settings

    demo = critic_settings(critics["copy"])
    assert demo.kind == "demo"
    assert (demo.video.fps, demo.video.max_frames, demo.video.max_pixels) == (4.0, 8, DEMO_READ_SIZE**2)
    assert demo.sampling.max_new_tokens == 16
    for model in (critics["other"], "nvidia/Cosmos-Reason1-7B"):
        recipe = critic_settings(model)
        assert recipe.kind == "recipe"
        v, s = recipe.video, recipe.sampling
        assert (v.fps, v.total_pixels, v.max_pixels) == (16.0, RECIPE_TOTAL_PIXELS, None)
        recipe_sampling = (0.6, 50, 0.95, 1.05, 4096, 1)  # the recipe's scoring script (video_reward.py)
        assert (s.temperature, s.top_k, s.top_p, s.repetition_penalty, s.max_new_tokens, s.seed) == recipe_sampling


def test_score_follows_the_critic_not_the_profile(critics, synth_clips, tmp_path):
    """The issue's case: --model set to another critic, no --profile full. Before, summary.json showed fps 4 and
    max_frames 8 (the demo's); now the recipe's settings, with their source."""
    clips = _clips(synth_clips, 2)
    r = run_cli("score", *clips, "--model", str(critics["other"]), "--out", str(tmp_path / "other"), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    settings = json.loads((tmp_path / "other" / "summary.json").read_text())["settings"]
    assert settings["critic"] == "recipe" and settings["video_source"] == "critic"
    assert settings["video"]["fps"] == 16.0 and settings["video"]["total_pixels"] == RECIPE_TOTAL_PIXELS
    assert settings["sampling"] is None and settings["sampling_source"] == "not used (expected mode)"
    assert "settings: video fps 16" in r.stdout and "not the demo critic" in r.stdout
    page = (tmp_path / "other" / "report.html").read_text()
    assert "fps 16" in page and "not the demo critic" in page
    results = json.loads((tmp_path / "other" / "evaluation_results.json").read_text())
    assert results["settings"]["video"]["fps"] == 16.0

    # The copied demo critic is still the demo critic: the demo settings, which a flag overrides field by field.
    out = tmp_path / "copy"
    r = run_cli(
        "score", *clips, "--model", str(critics["copy"]), "--out", str(out), "--device", "cpu", "--fps", "2",
        "--mode", "generate", "--max-new-tokens", "4", "--no-report",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    settings = json.loads((out / "summary.json").read_text())["settings"]
    assert settings["critic"] == "demo" and settings["video"]["fps"] == 2.0 and settings["video"]["max_frames"] == 8
    assert settings["video_from"]["fps"] == "flag" and settings["video_from"]["max_frames"] == "critic"
    assert settings["video_source"] == "critic, fps from flag"
    assert settings["sampling"]["max_new_tokens"] == 4 and settings["sampling"]["temperature"] == 0.6
    assert settings["sampling_from"]["max_new_tokens"] == "flag"


def test_the_settings_reach_the_model(critics, synth_clips, tmp_path):
    """The clips really are sampled differently: 8 frames for the demo critic, every frame (the recipe's fps 16 is
    above the clips' 8 fps) for any other critic."""
    from recipe_lib.inference.score_config import ScoreConfig
    from recipe_lib.inference.scoring import score_videos

    clips = _clips(synth_clips, 1)
    frames = {}
    for name in ("copy", "other"):
        cfg = ScoreConfig(inputs=clips, out_dir=tmp_path / name, model=str(critics[name]), device="cpu", batch_size=1)
        result = score_videos(cfg, progress=False)
        frames[name] = result.rows[0]["frames"]
        assert result.protocol.critic == ("demo" if name == "copy" else "recipe")
    assert frames["copy"] == 8
    assert frames["other"] == 16 > frames["copy"]


def test_caller_settings_and_overrides(critics, synth_clips, tmp_path):
    from recipe_lib.config import VideoSettings
    from recipe_lib.errors import ConfigError
    from recipe_lib.inference.plan import resolve_settings
    from recipe_lib.inference.score_config import ScoreConfig

    cfg = ScoreConfig(
        inputs=[],
        out_dir=tmp_path,
        model=str(critics["other"]),
        video=VideoSettings(fps=2.0, total_pixels=None, max_pixels=56 * 56, max_frames=4),
        video_source="eval conversations",
        video_overrides={"max_frames": 6},
    )
    resolved, protocol = resolve_settings(cfg)
    assert resolved.video.fps == 2.0 and resolved.video.max_frames == 6
    assert protocol.video_from["fps"] == "eval conversations" and protocol.video_from["max_frames"] == "flag"
    assert resolved.sampling.max_new_tokens == 4096 and protocol.sampling_source == "critic"
    with pytest.raises(ConfigError, match="unknown setting 'fsp'"):
        resolve_settings(ScoreConfig(inputs=[], out_dir=tmp_path, model="m", video_overrides={"fsp": 2}))


def test_evaluation_records_each_critics_settings_and_the_published_figures(critics, synth_clips, tmp_path):
    from recipe_lib.stages.evaluate import EvalConfig, run_evaluate

    result = run_evaluate(
        EvalConfig(
            critics={"demo": str(critics["copy"]), "other": str(critics["other"])},
            eval_data=str(synth_clips.dataset_dir),
            out_dir=tmp_path / "eval",
            limit=4,
            n_boot=20,
            thumbnails=False,
            device="cpu",
            dtype="float32",
        ),
        progress=False,
    )
    summary = result.summary()
    assert summary["demo"]["settings"]["video"]["fps"] == 4.0
    assert summary["other"]["settings"]["video"]["fps"] == 16.0
    data = json.loads(result.report.json.read_text())
    assert data["summary"]["other"]["settings"]["critic"] == "recipe"
    page = result.report.html.read_text()
    assert "Video and sampling settings" in page and "Against the published figures" in page
    assert "arxiv.org/abs/2503.06800" in page and "0.419" in page


def test_published_table():
    from recipe_lib.constants import PUBLISHED, published

    got = {(p.critic, p.stage, p.metric, p.step): p.value for p in PUBLISHED}
    assert got == {
        ("Cosmos-Reason1-7B", "zero-shot", "pearson", None): 0.293,
        ("Cosmos-Reason1-7B", "sft", "pearson", 60): 0.395,
        ("Cosmos-Reason1-7B", "sft", "accuracy", 100): 0.340,
        ("Cosmos-Reason1-7B", "grpo", "pearson", 900): 0.425,
        ("Cosmos-Reason1-7B", "grpo", "accuracy", 900): 0.374,
        ("Cosmos-Reason2", "sft", "pearson", 80): 0.419,
        ("Cosmos-Reason2", "sft", "accuracy", 40): 0.401,
        ("VideoPhy-2 AutoEval", "baseline", "pearson", None): 0.37,
    }
    assert all(p.source.startswith("https://") for p in PUBLISHED)
    assert [p.value for p in published("accuracy", "grpo")] == [0.374]


def test_published_comparison_figure_draws_every_reference():
    import pandas as pd
    from matplotlib.figure import Figure

    from recipe_lib.constants import published
    from recipe_lib.plots import published_comparison

    table = pd.DataFrame({"accuracy": [0.3, 0.5], "pearson": [0.2, float("nan")]}, index=["a", "b"])
    fig = published_comparison(table)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    for ax, metric in zip(fig.axes, ("accuracy", "pearson")):
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert len(labels) == 1 + len(published(metric))
        for p in published(metric):
            assert any(f"{p.value:.3f}" in label and p.cite in label for label in labels), p


def test_any_prompt_file_by_path(tiny_critic, synth_clips, tmp_path):
    """A prompt file of our own wording outside prompts/, shaped like the cookbook's (a one-line system prompt),
    passed by path to score and to prepare conversations."""
    prompt = tmp_path / "elsewhere" / "my_rubric.yaml"
    prompt.parent.mkdir()
    prompt.write_text(
        'system_prompt: "You judge motion in clips."\n'
        "user_prompt: |\n  Rate how well this clip follows physics, 1 to 5, as <answer>N</answer>.\n"
        'answer_prefix: "<answer>\\n"\nanswer_format: tagged\n'
    )
    clips = _clips(synth_clips, 1)
    r = run_cli("score", *clips, "--prompt", str(prompt), "--out", str(tmp_path / "s"), "--no-report")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["config"]["prompt"] == str(prompt)
    r = run_cli(
        "prepare", "conversations", "--data", str(synth_clips.dataset_dir), "--kind", "sft", "--prompt", str(prompt),
        "--out", str(tmp_path / "conv"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    import datasets

    first = json.loads(datasets.load_from_disk(str(tmp_path / "conv"))[0]["conversations"])
    assert "You judge motion in clips." in json.dumps(first)
    r = run_cli("score", *clips, "--prompt", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "prompt file not found" in r.stderr and "Traceback" not in r.stderr
