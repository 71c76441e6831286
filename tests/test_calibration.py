"""Calibration (ECE, reliability, temperature and isotonic maps, the calibration file) and the collapse check: on
probabilities with a known miscalibration, then with the real tiny critic on real clips through `plausibility
calibrate`, `plausibility score --calibration` and `plausibility evaluate --calibration`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from recipe_lib.constants import COLLAPSE_SHARE
from recipe_lib.errors import ConfigError, DataError
from recipe_lib.evaluation.calibration import (
    Calibration,
    expected_calibration_error,
    fit_calibration,
    fit_probs,
    load_calibration,
    measure_calibration,
    measure_probs,
    p_good,
    reliability_figure,
    temperature_scale,
)
from recipe_lib.evaluation.collapse import check_collapse
from support import run_cli


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.fixture(scope="module")
def overconfident() -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z); the critic reports softmax(2z): overconfident, undone by T = 2."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3000, 5)) * 1.5
    labels = np.array([rng.choice(5, p=q) + 1 for q in _softmax(z)])
    return _softmax(2 * z), labels


def test_ece_of_known_bins():
    conf = np.full(10, 0.9)
    assert expected_calibration_error(conf, np.array([1] * 9 + [0])) == pytest.approx(0.0)
    assert expected_calibration_error(conf, np.array([1] * 5 + [0] * 5)) == pytest.approx(0.4)
    # two bins: 0.15 predicted, 0.5 observed (gap 0.35) and 0.85 predicted, 1.0 observed (gap 0.15), equal weight
    conf = np.array([0.15, 0.15, 0.85, 0.85])
    assert expected_calibration_error(conf, np.array([1, 0, 1, 1])) == pytest.approx(0.25)


def test_temperature_scaling_undoes_a_known_overconfidence(overconfident):
    probs, labels = overconfident
    before = measure_probs(probs, labels, n_boot=200)
    cal = fit_probs(probs, labels, "temperature")
    assert cal.temperature == pytest.approx(2.0, rel=0.1)
    after = measure_probs(cal.apply(probs), labels, n_boot=200)
    assert before.label_kind == "graded" and before.multiclass is not None
    assert after.ece < before.ece / 3 and after.ece_good < before.ece_good
    lo, hi = before.multiclass.ece_interval
    assert lo <= before.ece <= hi
    assert after.multiclass.nll < before.multiclass.nll
    # temperature keeps the most likely digit
    assert (cal.apply(probs).argmax(1) == probs.argmax(1)).all()
    assert before.multiclass.bins[-1]["n"] > 0 and len(before.multiclass.bins) == 10


def test_binary_labels_measure_p_good_only(overconfident):
    probs, labels = overconfident
    binary = np.where(labels >= 4, 5, 1)
    cal = measure_probs(probs, binary, n_boot=50)
    assert cal.label_kind == "binary" and cal.multiclass is None and cal.good is not None
    assert "binary" in cal.note and "P(good)" in cal.note
    assert cal.good.mean_confidence == pytest.approx(p_good(probs).mean())
    fitted = fit_probs(probs, binary, "temperature")
    assert fitted.label_kind == "binary" and fitted.temperature > 1.2  # overconfident P(good) is softened


def test_isotonic_map_round_trips_through_its_file(overconfident, tmp_path):
    probs, labels = overconfident
    cal = fit_probs(probs, labels, "isotonic")
    path = cal.save(tmp_path / "iso.json")
    back = load_calibration(path)
    assert back.method == "isotonic" and back.path == str(path)
    np.testing.assert_allclose(back.apply(probs), cal.apply(probs))
    q = back.apply(probs)
    np.testing.assert_allclose(q.sum(1), 1.0)
    order = np.argsort(p_good(probs))
    assert np.all(np.diff(p_good(q)[order]) >= -1e-12)  # monotone in the critic's own P(good)
    assert measure_probs(q, labels, n_boot=0).ece_good < measure_probs(probs, labels, n_boot=0).ece_good


def test_fit_needs_enough_labelled_clips_with_both_classes():
    probs = np.full((30, 5), 0.2)
    with pytest.raises(DataError, match="too few to fit"):
        fit_probs(probs[:5], np.array([1, 5, 1, 5, 1]))
    with pytest.raises(DataError, match="every calibration clip is labelled good"):
        fit_probs(probs, np.full(30, 5))
    with pytest.raises(ConfigError, match="unknown calibration method"):
        fit_probs(probs, np.array([1, 5] * 15), "platt")
    rows = [{"score": 4, "probs": None, "item": {"pc": 5}}] * 30
    with pytest.raises(DataError, match="none of the 30 labelled clips has p"):
        fit_calibration(rows)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "calibration file not found"),
        ("{not json", "not valid JSON"),
        ('{"method": "temperature", "temperature": 2}', 'has no "kind"'),
        ('{"kind": "plausibility-calibration", "version": 9, "method": "temperature"}', "version 9"),
        ('{"kind": "plausibility-calibration", "version": 1, "method": "platt"}', "unknown method 'platt'"),
        ('{"kind": "plausibility-calibration", "version": 1, "method": "temperature", "temperature": -1}', "-1"),
        ('{"kind": "plausibility-calibration", "version": 1, "method": "temperature", "temperature": "2"}', "'2'"),
        (
            '{"kind": "plausibility-calibration", "version": 1, "method": "isotonic", '
            '"isotonic": {"x": [0.1, 0.5], "y": [0.9, 0.2]}}',
            "non-decreasing",
        ),
        (
            '{"kind": "plausibility-calibration", "version": 1, "method": "isotonic", '
            '"isotonic": {"x": [0.1, 0.5], "y": [0.2]}}',
            "same length",
        ),
    ],
)
def test_bad_calibration_files(tmp_path, content, message):
    path = tmp_path / "cal.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        load_calibration(path)
    assert info.value.hint


def test_apply_rows_keeps_the_uncalibrated_values():
    cal = Calibration("temperature", temperature=2.0)
    rows = [
        {"video": "a.mp4", "score": 5, "expected_score": 4.6, "probs": [0.0, 0.0, 0.1, 0.2, 0.7], "item": {"pc": 5}},
        {"video": "b.mp4", "score": None, "expected_score": None, "probs": None, "parse_error": "no answer"},
    ]
    out, without = cal.apply_rows(rows)
    assert without == 1 and out[1] == rows[1]
    q = temperature_scale(np.array(rows[0]["probs"]), 2.0)
    assert out[0]["probs"] == pytest.approx(q.tolist()) and out[0]["score"] == 5
    assert out[0]["expected_score"] == pytest.approx(float((q * np.arange(1, 6)).sum()))
    assert out[0]["expected_score"] < 4.6  # softened toward the middle
    assert out[0]["uncalibrated"] == {"probs": rows[0]["probs"], "expected_score": 4.6, "score": 5}


def test_collapse_check():
    rows = [{"score": 4, "item": {"pc": p}} for p in [1, 2, 4, 5, 4, 3, 4, 5, 1, 4, 2, 4]]
    rows += [{"score": 5, "item": {"pc": 5}}, {"score": None, "item": {"pc": 1}}]
    check = check_collapse(rows, "pc")
    assert check.n == 13 and check.top_score == 4 and check.top_share == pytest.approx(12 / 13)
    assert check.collapsed and check.share_threshold == COLLAPSE_SHARE
    msg = check.message("zero-shot")
    assert msg.startswith("zero-shot: collapse: >= 80 % of predictions are 4 (12 of 13, 92 %)")
    assert "most common value, 4, is 36 %" in msg
    spread = check_collapse([{"score": s} for s in [1, 2, 3, 4, 5] * 3])
    assert spread.checked and not spread.collapsed and spread.message() is None
    few = check_collapse([{"score": 4}] * 3)
    assert not few.checked and not few.collapsed and "fewer than 10" in few.to_dict()["note"]


# ---------------------------------------------------------------------------------------------------------------------
# With the real tiny critic on real clips
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cal_clips(tmp_path_factory):  # noqa: ANN201
    """24 labelled clips (graded labels 1-5): enough to fit a calibration."""
    from recipe_lib.data.synthetic import SynthConfig, generate_clips

    out = tmp_path_factory.mktemp("calclips")
    return generate_clips(SynthConfig(n=24, out_dir=out, seed=11, style="contrast", frames=8))


@pytest.fixture(scope="module")
def calibration_file(tiny_critic, cal_clips, tmp_path_factory):  # noqa: ANN201
    folder = tmp_path_factory.mktemp("cal")
    out = folder / "tiny_calibration.json"
    proc = run_cli(
        "calibrate",
        str(cal_clips.dataset_dir),
        "--out",
        str(out),
        "--model",
        str(tiny_critic),
        "--scores-dir",
        str(folder / "scores"),
        "--prompt",
        "video_reward_compact",
        "--batch-size",
        "8",
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout, folder


def test_calibrate_command_writes_a_file_score_reads(calibration_file, tiny_critic, cal_clips):
    path, stdout, _ = calibration_file
    assert "fitted temperature scaling, T = " in stdout and "on 24 labelled clips" in stdout
    assert "ECE of P(good) on the calibration split" in stdout and "(in-sample)" in stdout
    cal = load_calibration(path)
    assert cal.method == "temperature" and cal.temperature > 0
    assert cal.fitted_on["n"] == 24 and cal.fitted_on["model"] == str(tiny_critic)
    # the fit minimises the negative log-likelihood, and T = 1 (no change) was a candidate
    assert cal.in_sample["nll"]["after"] <= cal.in_sample["nll"]["before"] + 1e-9
    data = json.loads(path.read_text())
    assert data["kind"] == "plausibility-calibration" and data["temperature"] == cal.temperature


def test_score_with_calibration_recomputes_scores_and_records_it(calibration_file, tiny_critic, cal_clips, tmp_path):
    path, _, _ = calibration_file
    cal = load_calibration(path)
    out = tmp_path / "scored"
    common = [str(cal_clips.dataset_dir), "--out", str(out), "--model", str(tiny_critic), "--no-report"]
    common += ["--prompt", "video_reward_compact", "--batch-size", "8"]
    plain = run_cli("score", *common)
    assert plain.returncode == 0, plain.stderr
    raw = pd.read_csv(out / "predictions.csv").set_index("video")
    assert json.loads((out / "summary.json").read_text())["calibration"] == {"applied": False}

    calibrated = run_cli("score", *common, "--calibration", str(path))
    assert calibrated.returncode == 0, calibrated.stderr
    assert f"calibrated with {path} (temperature scaling, T = {cal.temperature:.3f})" in calibrated.stdout
    assert "(0 now, 24 cached)" in calibrated.stdout  # the store keeps the critic's own probabilities
    summary = json.loads((out / "summary.json").read_text())
    assert summary["calibration"]["applied"] and summary["calibration"]["file"] == str(path)
    assert summary["calibration"]["temperature"] == cal.temperature
    assert summary["collapse"]["n"] == 24 and "collapsed" in summary["collapse"]
    new = pd.read_csv(out / "predictions.csv").set_index("video").loc[raw.index]
    p_cols = [f"p{i}" for i in range(1, 6)]
    expected = temperature_scale(raw[p_cols].to_numpy(), cal.temperature)
    np.testing.assert_allclose(new[p_cols].to_numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(new["expected_score"], expected @ np.arange(1, 6), atol=1e-6)
    scores_csv = pd.read_csv(out / "scores.csv").set_index("video").loc[raw.index]
    np.testing.assert_allclose(scores_csv["expected_score"], new["expected_score"], atol=1e-6)
    if abs(cal.temperature - 1) > 0.05:
        assert not np.allclose(new["expected_score"], raw["expected_score"], atol=1e-4)


def test_score_refuses_a_bad_calibration_before_scoring(tiny_critic, cal_clips, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "plausibility-calibration", "version": 1, "method": "temperature", "temperature": 0}')
    out = tmp_path / "never"
    proc = run_cli("score", str(cal_clips.dataset_dir), "--out", str(out), "--model", str(tiny_critic), "--calibration",
                   str(bad))  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is not a calibration file: temperature 0 is not a number from 0.01 to 100" in proc.stderr
    assert "hint:" in proc.stderr and not (out / "results.sqlite").exists()
    gen = run_cli("score", str(cal_clips.dataset_dir), "--out", str(out), "--mode", "generate", "--calibration",
                  str(bad))  # fmt: skip
    assert gen.returncode == 2 and "only expected mode gives" in gen.stderr


def test_calibrate_refuses_too_few_clips_and_generate_mode(tiny_critic, synth_clips, tmp_path):
    proc = run_cli(
        "calibrate", str(synth_clips.dataset_dir), "--out", str(tmp_path / "c.json"), "--model", str(tiny_critic),
        "--scores-dir", str(tmp_path / "s"), "--limit", "6",
    )  # fmt: skip
    assert proc.returncode == 2 and "too few to fit a calibration (at least 20)" in proc.stderr
    assert not (tmp_path / "c.json").exists()
    gen = run_cli("calibrate", str(synth_clips.dataset_dir), "--out", str(tmp_path / "c.json"), "--mode", "generate")
    assert gen.returncode == 2 and "only expected mode gives" in gen.stderr


def test_evaluate_measures_and_applies_calibration(calibration_file, tiny_critic, cal_clips, tmp_path):
    from recipe_lib.stages.evaluate import EvalConfig, run_evaluate

    path, _, folder = calibration_file
    result = run_evaluate(
        EvalConfig(
            critics={"tiny": str(tiny_critic), "tiny-cal": str(tiny_critic)},
            calibrations={"tiny-cal": str(path)},
            eval_data=str(cal_clips.dataset_dir),
            out_dir=tmp_path / "eval",
            n_boot=100,
            thumbnails=False,
        ),
        progress=False,
    )
    raw, cal = result.calibration["tiny"], result.calibration["tiny-cal"]
    assert raw.n_with_probs == cal.n_with_probs == 24 and raw.label_kind == "graded"
    # the same clips, calibrated: what calibrate measured in-sample
    fitted = load_calibration(path).in_sample["ece_p_good"]
    assert raw.ece_good == pytest.approx(fitted["before"]) and cal.ece_good == pytest.approx(fitted["after"])
    summary = result.summary()
    assert summary["tiny-cal"]["calibration_applied"]["file"] == str(path)
    assert "calibration_applied" not in summary["tiny"] and summary["tiny"]["ece_p_good"] == raw.ece_good
    assert isinstance(result.reliability_figure(), Figure)
    table = result.calibration_table()
    assert list(table.index) == ["tiny", "tiny-cal"] and table.loc["tiny", "ece_p_good"] == pytest.approx(raw.ece_good)
    html = result.report.html.read_text()
    assert "<h2>Calibration</h2>" in html and "tiny-cal calibrated with" in html
    data = json.loads(result.report.json.read_text())
    assert data["summary"]["tiny"]["collapse"]["n"] == 24
    assert data["critics"][0]["collapse"]["counts"] == result.collapse["tiny"].counts


def test_reliability_figure_without_probabilities():
    cal = measure_calibration([{"score": 4, "probs": None, "item": {"pc": 5}}])
    assert cal.label_kind is None and "no labelled clip has p(1..5)" in cal.note
    fig = reliability_figure({"gen": cal})
    assert isinstance(fig, Figure)


def test_collapse_warning_in_the_score_report(tiny_critic, synth_clips, tmp_path):
    """The untrained tiny critic answers 4 for every clip (the documented failure): the summary, the printed lines
    and the report say so."""
    proc = run_cli(
        "score", str(synth_clips.dataset_dir), "--out", str(tmp_path / "s"), "--model", str(tiny_critic),
        "--prompt", "video_reward_compact",  # the demo prompt, as notebook 06 scores it
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    check = summary["collapse"]
    assert check["n"] == synth_clips.n_clips and sum(check["counts"].values()) == check["n"]
    assert check["collapsed"] and check["top_score"] == 4 and check["top_share"] >= COLLAPSE_SHARE, check
    line = f"warning: collapse: >= 80 % of predictions are 4 ({check['counts']['4']} of {check['n']}"
    assert line in proc.stdout
    html = (tmp_path / "s" / "report.html").read_text()
    assert 'class="warn collapse"' in html and "&gt;= 80 % of predictions are 4" in html  # escaped by jinja2
    # a trained critic that spreads its answers is not flagged: the same check on spread rows
    assert not check_collapse([{"score": s} for s in (1, 5) * 10]).collapsed
