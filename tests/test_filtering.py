"""Keep/reject manifests, best-of-N ranking and threshold choice; the score and rank commands on real clips."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from recipe_lib.errors import ConfigError, DataError, RecipeError
from recipe_lib.evaluation.filtering import (
    choose_threshold,
    choose_threshold_from_rows,
    decide,
    rank_rollouts,
    threshold_curve,
    write_filter_outputs,
)
from support import run_cli


def _row(video, score, expected=None, **item):
    return {
        "video": video,
        "score": score,
        "expected_score": expected,
        "probs": [0.1, 0.1, 0.2, 0.3, 0.3] if expected is not None else None,
        "parse_error": None if score is not None else "answer 7 is outside 1-5",
        "raw_output": None,
        "trials": [{"text": "<answer>4</answer>", "score": score, "error": None}] if expected is None else [],
        "timing": {"preprocess_s": 0.1, "model_s": 0.05},
        "item": {"video_url": video, **item},
    }


def test_decisions_read_expected_score_then_score():
    assert decide(_row("a", 5, 3.9), 4)[:3] == ("reject", 3.9, "expected_score")  # expected wins over argmax
    assert decide(_row("b", 3, 4.0), 4)[0] == "keep"  # at the threshold is kept
    assert decide(_row("c", 4), 4)[:3] == ("keep", 4.0, "score")
    decision, value, _, reason = decide(_row("d", None), 4)
    assert decision == "unparsed" and value is None and "outside 1-5" in reason


def test_manifest_and_per_video_files(tmp_path):
    rows = [_row("a.mp4", 5, 4.6, pc=5), _row("b.mp4", 2, 2.2, pc=1), _row("c.mp4", None, pc=3)]
    skipped = [{"video": "broken.mp4", "reason": "not a readable video: broken.mp4"}]
    res = write_filter_outputs(rows, skipped, tmp_path, threshold=4)
    assert res.counts == {"keep": 1, "reject": 1, "unparsed": 1, "skipped": 1}
    with res.manifest_csv.open() as fh:
        manifest = {r["video"]: r for r in csv.DictReader(fh)}
    assert {v: r["decision"] for v, r in manifest.items()} == {
        "a.mp4": "keep",
        "b.mp4": "reject",
        "c.mp4": "unparsed",
        "broken.mp4": "skipped",
    }
    assert "not a readable video" in manifest["broken.mp4"]["reason"]
    lines = [json.loads(x) for x in res.predictions_jsonl.read_text().splitlines()]
    assert len(lines) == 4 and lines[0]["p5"] == 0.3 and lines[0]["model_s"] == 0.05
    assert lines[2]["n_trials"] == 1 and lines[2]["raw_output"] == "<answer>4</answer>"
    with res.predictions_csv.open() as fh:
        header = next(csv.reader(fh))
    for col in ("score", "expected_score", "p1", "p5", "n_trials", "trial_scores", "raw_output", "preprocess_s"):
        assert col in header
    assert not list(tmp_path.glob("*.tmp"))


def test_threshold_curve_matches_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(1, 6, 300)
    values = np.clip(labels + rng.normal(0, 1.2, 300), 1, 5)
    curve, n_good, n_unparsed = threshold_curve(labels.tolist(), values.tolist())
    precision, recall, thresholds = skm.precision_recall_curve(labels >= 4, values)
    ref = dict(zip(thresholds, zip(precision[:-1], recall[:-1])))
    for rec in curve.itertuples():
        if rec.threshold in ref:
            assert rec.precision == pytest.approx(ref[rec.threshold][0], abs=1e-12)
            assert rec.recall == pytest.approx(ref[rec.threshold][1], abs=1e-12)
    assert n_good == int((labels >= 4).sum()) and n_unparsed == 0


def test_choose_threshold_by_f1_and_by_precision():
    rng = np.random.default_rng(1)
    labels = rng.integers(1, 6, 150)
    values = np.clip(labels + rng.normal(0, 1.0, 150), 1, 5)
    best = choose_threshold(labels.tolist(), values.tolist())
    brute = max(
        skm.f1_score(labels >= 4, values >= t) for t in np.unique(values)
    )  # every candidate threshold, F1 from scikit-learn
    assert best.f1 == pytest.approx(brute, abs=1e-12)
    assert best.f1 == pytest.approx(skm.f1_score(labels >= 4, values >= best.threshold), abs=1e-12)
    strict = choose_threshold(labels.tolist(), values.tolist(), objective="precision", target_precision=0.9)
    assert strict.precision >= 0.9
    ok = [t for t in np.unique(values) if skm.precision_score(labels >= 4, values >= t, zero_division=0) >= 0.9]
    assert strict.recall == pytest.approx(max(skm.recall_score(labels >= 4, values >= t) for t in ok), abs=1e-12)
    fig = best.figure()
    assert fig.axes and fig.axes[0].get_lines()
    d = best.to_dict()
    assert d["threshold"] == best.threshold and len(d["curve"]) == len(best.curve)


def test_threshold_choice_errors_and_unparsed():
    with pytest.raises(RecipeError, match="no threshold reaches precision"):
        choose_threshold([5, 1, 5, 1], [1.0, 5.0, 1.5, 4.5], objective="precision", target_precision=0.99)
    with pytest.raises(DataError, match="all 3 labelled clips are good"):
        choose_threshold([5, 4, 5], [1.0, 2.0, 3.0])
    with pytest.raises(ConfigError, match="target_precision"):
        choose_threshold([5, 1], [4.0, 2.0], objective="precision")
    # An unparsed good clip is never kept: recall counts it as missed.
    choice = choose_threshold([5, 5, 1], [4.5, None, 2.0])
    assert choice.recall == 0.5 and choice.n_unparsed == 1
    rows = [_row("a", 5, 4.5, pc=5), _row("b", None, pc=5), _row("c", 2, 2.0, pc=1), _row("d", 3, 3.0)]
    assert choose_threshold_from_rows(rows).recall == 0.5


def test_rank_by_column_and_by_pattern(tmp_path):
    rows = [
        _row("/x/p1_seed0.mp4", 4, 4.2, prompt="p1"),
        _row("/x/p1_seed1.mp4", 5, 4.7, prompt="p1"),
        _row("/x/p1_seed2.mp4", None, prompt="p1"),
        _row("/x/p2_seed0.mp4", 2, 2.5, prompt="p2"),
        _row("/x/loose.mp4", 5, 4.9, prompt=None),
    ]
    skipped = [{"video": "/x/p2_seed1.mp4", "reason": "video is an empty file"}]
    by_col = rank_rollouts(rows, skipped, group_by="prompt", out_dir=tmp_path)
    g = by_col.groups.set_index("group")
    assert g.loc["p1", "best_video"] == "/x/p1_seed1.mp4"
    assert g.loc["p1", "margin"] == pytest.approx(0.5)
    assert g.loc["p1", "n_unparsed"] == 1 and g.loc["p1", "n_scored"] == 2
    assert g.loc["p2", "runner_up_video"] is None or np.isnan(g.loc["p2", "runner_up_value"])
    loose = by_col.clips[by_col.clips["video"] == "/x/loose.mp4"].iloc[0]
    assert pd.isna(loose["group"]) and "no value in column 'prompt'" in loose["reason"]
    assert (tmp_path / "ranking.csv").exists() and (tmp_path / "ranking_clips.csv").exists()

    by_name = rank_rollouts(rows, skipped, group_pattern=r"(?P<group>p\d+)_seed\d+\.mp4")
    g = by_name.groups.set_index("group")
    assert g.loc["p2", "n_skipped"] == 1 and g.loc["p2", "best_video"] == "/x/p2_seed0.mp4"
    assert by_name.n_ungrouped == 1  # loose.mp4 matches no pattern, and is listed
    unparsed = by_name.clips[by_name.clips["video"] == "/x/p1_seed2.mp4"].iloc[0]
    assert unparsed["status"] == "unparsed" and not unparsed["best"]


def test_rank_user_mistakes():
    rows = [_row("/x/a.mp4", 4, 4.0, prompt="p")]
    with pytest.raises(ConfigError, match="no named group 'group'"):
        rank_rollouts(rows, group_pattern=r"(.+)_\d+")
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        rank_rollouts(rows, group_pattern=r"(?P<group>[a-")
    with pytest.raises(ConfigError, match="no column 'seed'"):
        rank_rollouts(rows, group_by="seed")
    with pytest.raises(ConfigError, match="exactly one"):
        rank_rollouts(rows)


def test_score_command_writes_manifest_and_report(tiny_critic, synth_clips, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(
        "score",
        str(synth_clips.dataset_dir),
        "--out",
        str(out),
        "--model",
        str(tiny_critic),
        "--threshold",
        "3.2",
        "--batch-size",
        "8",
    )
    assert proc.returncode == 0, proc.stderr
    assert "at threshold 3.2" in proc.stdout and "against labels: n=16" in proc.stdout
    for name in ("predictions.csv", "predictions.jsonl", "manifest.csv", "report.html", "evaluation_results.json"):
        assert (out / name).exists(), name
    with (out / "manifest.csv").open() as fh:
        manifest = list(csv.DictReader(fh))
    assert len(manifest) == synth_clips.n_clips
    for rec in manifest:
        value = float(rec["value"])
        assert rec["decision"] == ("keep" if value >= 3.2 else "reject")
    data = json.loads((out / "evaluation_results.json").read_text())
    assert data["threshold"] == 3.2 and data["critics"][0]["metrics"]["n"] == 16


def test_score_command_counts_broken_clips(tiny_critic, synth_clips, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for clip in sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[:2]:
        shutil.copy(clip, videos / clip.name)
    (videos / "truncated.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    out = tmp_path / "out"
    proc = run_cli("score", str(videos), "--out", str(out), "--model", str(tiny_critic), "--no-report")
    assert proc.returncode == 0, proc.stderr
    assert "skipped 1" in proc.stdout and not (out / "report.html").exists()
    with (out / "manifest.csv").open() as fh:
        decisions = {r["video"].rsplit("/", 1)[-1]: r["decision"] for r in csv.DictReader(fh)}
    assert decisions["truncated.mp4"] == "skipped" and len(decisions) == 3


def test_rank_command(tiny_critic, synth_clips, tmp_path):
    out = tmp_path / "rank"
    proc = run_cli(
        "rank", str(synth_clips.dataset_dir), "--group-by", "scene", "--out", str(out), "--model", str(tiny_critic)
    )
    assert proc.returncode == 0, proc.stderr
    with (out / "ranking.csv").open() as fh:
        groups = list(csv.DictReader(fh))
    import datasets

    scenes = set(datasets.load_from_disk(str(synth_clips.dataset_dir))["scene"])
    assert len(groups) == len(scenes) >= 2 and all(g["best_video"] for g in groups)
    assert {g["group"] for g in groups} == scenes
    for g in groups:
        if g["runner_up_value"]:
            assert float(g["margin"]) == pytest.approx(float(g["best_value"]) - float(g["runner_up_value"]))
    bad = run_cli("rank", str(synth_clips.dataset_dir), "--group-pattern", "(.+)", "--out", str(out))
    assert bad.returncode == 2 and "no named group 'group'" in bad.stderr and "Traceback" not in bad.stderr
