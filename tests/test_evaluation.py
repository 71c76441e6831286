"""The evaluation stage with the real tiny critic on real synthetic clips; the evaluate command; notebook 06."""

from __future__ import annotations

import json
import os
import shutil

import nbformat
import pytest
from matplotlib.figure import Figure

from recipe_lib.demo import default_demo_critics
from recipe_lib.errors import ConfigError, DataError
from recipe_lib.evaluation.filtering import decision_value
from recipe_lib.stages.evaluate import EvalConfig, detection_rates, run_evaluate
from support import run_cli


@pytest.fixture(scope="module")
def evaluated(tiny_critic, synth_clips, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    cfg = EvalConfig(
        critics={"tiny": str(tiny_critic), "tiny-again": str(tiny_critic)},
        eval_data=str(synth_clips.dataset_dir),
        out_dir=out,
        n_boot=200,
    )
    return run_evaluate(cfg, progress=False)


def test_metrics_table_and_files(evaluated, synth_clips):
    n = synth_clips.n_clips
    assert list(evaluated.table.index) == ["tiny", "tiny-again"]
    a, b = evaluated.metrics["tiny"], evaluated.metrics["tiny-again"]
    assert a.n == n and a.coverage == 1.0
    # same model, same clips, same seed (NaN where a constant prediction leaves a correlation undefined)
    assert json.dumps(a.values, sort_keys=True) == json.dumps(b.values, sort_keys=True)
    assert json.dumps(a.intervals, sort_keys=True) == json.dumps(b.intervals, sort_keys=True)
    assert evaluated.table.loc["tiny", "accuracy"] == pytest.approx(a["accuracy"])
    shown = evaluated.display_table()
    assert "[" in shown.loc["tiny", "pearson"] or shown.loc["tiny", "pearson"] == "–"
    out = evaluated.out_dir
    for name in ("evaluation_report.html", "evaluation_results.json", "comparison.csv", "groups.csv"):
        assert (out / name).exists(), name
    assert (out / "scores" / "tiny" / "results.sqlite").exists()
    data = json.loads((out / "evaluation_results.json").read_text())
    assert [c["name"] for c in data["critics"]] == ["tiny", "tiny-again"]
    assert data["summary"]["tiny"]["accuracy"] == pytest.approx(a["accuracy"])
    assert set(data["threshold_curves"]) == {"tiny", "tiny-again"}
    groups = evaluated.groups["tiny"]
    assert {"violation", "is_hard", "scene"} & set(groups["column"]) >= {"violation", "is_hard"}


def test_detection_rates_match_the_rows(evaluated):
    rows = evaluated.scores["tiny"].rows
    det = evaluated.detection[evaluated.detection["critic"] == "tiny"].set_index("violation")
    by_type: dict[str, list[bool]] = {}
    for r in rows:
        by_type.setdefault(r["item"]["violation"], []).append(decision_value(r)[0] < evaluated.threshold)
    assert set(det.index) == set(by_type)
    for violation, flags in by_type.items():
        assert det.loc[violation, "n"] == len(flags)
        assert det.loc[violation, "rate"] == pytest.approx(sum(flags) / len(flags))
        assert det.loc[violation, "rate_lo"] <= det.loc[violation, "rate"] <= det.loc[violation, "rate_hi"]
    assert det.loc["none", "kind"] == "false alarm"
    summary = evaluated.summary()["tiny"]
    assert summary["false_alarm_rate"] == pytest.approx(det.loc["none", "rate"])


def test_unparsed_clips_are_not_caught():
    rows = [
        {"score": None, "expected_score": None, "item": {"violation": "hover", "violation_category": "gravity"}},
        {"score": 1, "expected_score": 1.5, "item": {"violation": "hover", "violation_category": "gravity"}},
        {"score": 5, "expected_score": 4.5, "item": {"violation": "none"}},
    ]
    det = detection_rates({"c": rows}, threshold=4, n_boot=50).set_index("violation")
    assert det.loc["hover", "rate"] == 0.5 and det.loc["hover", "unparsed"] == 1
    assert det.loc["none", "rate"] == 0.0


def test_figures(evaluated):
    figs = evaluated.confusion_figures()
    assert set(figs) == {"tiny", "tiny-again"} and all(isinstance(f, Figure) for f in figs.values())
    assert len(evaluated.confusion_figure().axes) == 2
    assert isinstance(evaluated.detection_figure(), Figure)
    fig = evaluated.threshold_figure()
    assert fig is None or len(fig.axes) == 2


def test_rerun_uses_the_cache(evaluated, tiny_critic, synth_clips):
    again = run_evaluate(
        EvalConfig(
            critics={"tiny": str(tiny_critic)},
            eval_data=str(synth_clips.dataset_dir),
            out_dir=evaluated.out_dir,
            n_boot=200,
            thumbnails=False,
        ),
        progress=False,
    )
    assert again.scores["tiny"].n_scored_now == 0 and again.scores["tiny"].n_cached == synth_clips.n_clips
    same = json.dumps(again.metrics["tiny"].values, sort_keys=True)
    assert same == json.dumps(evaluated.metrics["tiny"].values, sort_keys=True)


def test_default_demo_critics_only_existing_folders(tiny_critic, tmp_path, monkeypatch):
    monkeypatch.setenv("PLAUSIBILITY_BUILD_DIR", str(tmp_path))
    (tmp_path / "models").mkdir()
    os.symlink(tiny_critic, tmp_path / "models" / "tiny-critic")
    assert list(default_demo_critics()) == ["untrained"]
    (tmp_path / "03_sft" / "checkpoints" / "final").mkdir(parents=True)
    critics = default_demo_critics()
    assert list(critics) == ["untrained", "sft"] and critics["sft"].endswith("03_sft/checkpoints/final")


def test_user_mistakes(tiny_critic, synth_clips, tmp_path):
    with pytest.raises(ConfigError, match="not usable as a short name"):
        run_evaluate(EvalConfig(critics={"a/b": str(tiny_critic)}, eval_data=str(synth_clips.dataset_dir)))
    with pytest.raises(ConfigError, match="no model"):
        run_evaluate(EvalConfig(critics={"a": " "}, eval_data=str(synth_clips.dataset_dir)))
    loose = tmp_path / "loose"
    loose.mkdir()
    for clip in sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[:2]:
        shutil.copy(clip, loose / clip.name)
    with pytest.raises(DataError, match="has a label in column 'pc'"):
        run_evaluate(
            EvalConfig(critics={"tiny": str(tiny_critic)}, eval_data=str(loose), out_dir=tmp_path / "o"),
            progress=False,
        )


def test_evaluate_command(tiny_critic, synth_clips, tmp_path):
    out = tmp_path / "eval"
    proc = run_cli(
        "evaluate",
        "--critic",
        f"tiny={tiny_critic}",
        "--data",
        str(synth_clips.dataset_dir),
        "--out",
        str(out),
        "--resamples",
        "100",
        "--no-thumbnails",
    )
    assert proc.returncode == 0, proc.stderr
    assert "accuracy" in proc.stdout and "report:" in proc.stdout
    assert (out / "evaluation_report.html").exists() and (out / "evaluation_results.json").exists()
    bad = run_cli("evaluate", "--critic", "tiny", "--data", str(synth_clips.dataset_dir))
    assert bad.returncode == 2 and "is not NAME=MODEL" in bad.stderr and "Traceback" not in bad.stderr


def image_outputs(path) -> int:
    nb = nbformat.read(path, as_version=4)
    return sum(
        1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {})
    )


@pytest.mark.slow
def test_06_evaluation_notebook():
    from recipe_lib.notebooks import run_notebook

    run = run_notebook("06_evaluation", timeout=900)
    m = run.metrics
    assert m is not None and m["threshold"] == 4 and m["mode"] == "expected"
    assert "untrained" in m["critics"]
    for name, c in m["critics"].items():
        assert c["n"] == m["n_clips"] >= 40 and c["coverage"] == 1.0, name
        for key in ("accuracy", "within1", "f1"):
            lo, hi = c["intervals"][key]
            assert 0 <= lo <= c[key] <= hi <= 1, (name, key)
        assert 0 <= c["detection_rate"] <= 1 and 0 <= c["false_alarm_rate"] <= 1
        assert c["best_threshold"] is None or 1 <= c["best_threshold"] <= 5
        assert c["calibration"]["label_kind"] == "binary" and 0 <= c["ece_p_good"] <= 1, name
        assert c["collapse"]["n"] == m["n_clips"]
    # the untrained critic answers 4 for every clip: the notebook says so
    assert m["critics"]["untrained"]["collapse"]["collapsed"]
    assert any(w.startswith("untrained: collapse: >= 80 % of predictions are 4") for w in m["warnings"])
    held_out = m["held_out_calibration"]
    assert len(held_out) == 2 and all(h["good"]["n"] == m["n_clips"] // 2 for h in held_out.values())
    assert image_outputs(run.output) >= 3  # confusion matrices, detection rates, threshold curve
    assert run.html.exists()
    from pathlib import Path

    report = Path(m["report"])
    assert report.exists() and report.parent.name == "reports"
