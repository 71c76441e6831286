"""Outside critics as baselines: a table of video -> score (optionally p1..p5) joined by video to real evaluation
data and measured like our critics; tables written here (CSV, parquet, odd rows) and VideoPhy-2-AutoEval's own
predictions for the shared VideoPhy-2 clips (skipped when ../shared is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recipe_lib.errors import DataError
from recipe_lib.evaluation.metrics import evaluate_predictions
from recipe_lib.evaluation.outside_scores import OutsideScoreResult, is_outside_table, load_outside_scores
from recipe_lib.inference.plan import resolve_items
from recipe_lib.stages.evaluate import EvalConfig, run_evaluate
from support import SHARED_VIDEOS, run_cli


@pytest.fixture(scope="module")
def items(synth_clips) -> list[dict]:
    return resolve_items([str(synth_clips.dataset_dir)])


def _odd_table(items: list[dict]) -> pd.DataFrame:
    """10 of the 16 clips, named three ways, plus rows the join must count rather than drop."""
    urls = [str(it["video_url"]) for it in items]
    rows = [{"video": Path(u).name, "score": float(1 + i % 5)} for i, u in enumerate(urls[:6])]  # file name
    rows += [{"video": f"  {u}  ", "score": 5} for u in urls[6:8]]  # full path, padded
    rows.append({"video": Path(urls[8]).stem, "score": 3.6})  # name without extension, continuous score
    rows.append({"video": Path(urls[9]).name, "score": None})  # empty cell: the critic gave no score
    rows.append({"video": "renders/not_in_eval.mp4", "score": 2})  # unknown
    rows.append({"video": "https://cdn.example.com/x/also%20unknown.mp4", "score": 4})  # unknown, a URL
    return pd.DataFrame(rows)


def test_is_outside_table():
    assert is_outside_table("runs/autoeval.CSV") and is_outside_table("x.parquet") and is_outside_table("a.jsonl")
    assert not is_outside_table("nvidia/Cosmos-Reason1-7B") and not is_outside_table("build/03_sft/checkpoints/final")


def test_join_counts_missing_unknown_and_empty_rows(items, tmp_path):
    path = tmp_path / "ext.csv"
    _odd_table(items).to_csv(path)  # with pandas' unnamed index column, as VideoPhy-2-AutoEval writes it
    result = load_outside_scores("ext", path, items)
    assert isinstance(result, OutsideScoreResult) and result.video_column == "video" and result.score_column == "score"
    assert len(result.rows) == 10 and result.n_missing == 6 and result.n_inputs == 16
    assert [r["video"] for r in result.rows] == [str(it["video_url"]) for it in items[:10]]
    assert {s["reason"] for s in result.skipped} == {"no score from ext in ext.csv"}
    assert [s["video"] for s in result.skipped] == [str(it["video_url"]) for it in items[10:]]
    assert [u["row"] for u in result.unknown] == [10, 11]
    by_video = {r["video"]: r for r in result.rows}
    continuous = by_video[str(items[8]["video_url"])]
    assert continuous["score"] == 4 and continuous["expected_score"] == pytest.approx(3.6)
    empty = by_video[str(items[9]["video_url"])]
    assert empty["score"] is None and "empty cell" in empty["parse_error"] and result.n_unparsed == 1
    assert all(r["item"] == it for r, it in zip(result.rows, items))  # labels and columns of the eval data
    lines = result.join_lines()
    assert lines[0] == f"6 of 16 clips have no score from ext ({path})"
    assert lines[1].startswith(f"2 of 12 rows of {path} name clips not in the eval data: row 10 (renders/not_in")
    summary = result.summary()
    assert summary["missing"] == 6 and summary["unknown_rows"] == 2 and summary["scored"] == 10


def test_parquet_with_probabilities(items, tmp_path):
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(5), size=len(items))
    table = pd.DataFrame({"video_url": [Path(it["video_url"]).name for it in items]})
    for k in range(5):
        table[f"P{k + 1}"] = probs[:, k]  # column names are matched without case
    table.to_parquet(tmp_path / "ext.parquet")
    result = load_outside_scores("ext", tmp_path / "ext.parquet", items)
    assert result.has_probs and result.score_column is None and len(result.rows) == len(items)
    for r, p in zip(result.rows, probs):
        assert r["probs"] == pytest.approx(p.tolist())
        assert r["score"] == int(p.argmax() + 1)
        assert r["expected_score"] == pytest.approx(float(p @ np.arange(1, 6)))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"video": "A", "score": "high"}], "row 0: score 'high' is not a number"),
        ([{"video": "A", "score": 7}], "row 0: score 7 is outside 1-5"),
        ([{"video": "A", "score": 0}], "is outside 1-5"),
        ([{"video": "A", "score": float("inf")}], "not a finite number"),
        ([{"video": "A", "score": 4}, {"video": "FULL", "score": 5}], "rows 0 and 1 both score the clip"),
        ([{"video": None, "score": 4}], "row 0: no video in column 'video'"),
        ([{"clip": "A", "score": 4}], "has no video column"),
        ([{"video": "A", "rating": 4}], "has no score column"),
        ([{"video": "A", "p1": 0.5, "p2": 0.5}], "has p1, p2 but not all of p1..p5"),
        ([{"video": "A", "p1": 0.5, "p2": 0.5, "p3": 0.5, "p4": 0, "p5": 0}], "p1..p5 sum to 1.5000, not 1"),
        ([{"video": "A", "p1": 0.5, "p2": 0.5, "p3": None, "p4": 0, "p5": 0}], "p1..p5 are partly empty"),
        ([{"video": "nowhere.mp4", "score": 4}], "none of the 1 rows"),
    ],
)
def test_bad_tables(items, tmp_path, rows, message):
    first = str(items[0]["video_url"])
    for row in rows:
        if row.get("video") == "A" or row.get("clip") == "A":
            row["video" if "video" in row else "clip"] = Path(first).name
        if row.get("video") == "FULL":
            row["video"] = first
    path = tmp_path / "bad.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_outside_scores("ext", path, items)


def test_a_name_shared_by_two_clips_is_ambiguous(items, tmp_path):
    twins = [{**items[0]}, {**items[1], "video_url": str(Path("/elsewhere") / Path(items[0]["video_url"]).name)}]
    path = tmp_path / "t.csv"
    pd.DataFrame([{"video": Path(items[0]["video_url"]).name, "score": 3}]).to_csv(path, index=False)
    with pytest.raises(DataError, match="matches 2 clips of the eval data") as info:
        load_outside_scores("ext", path, twins)
    assert "full path" in info.value.hint


def test_evaluate_measures_an_outside_critic_like_ours(items, synth_clips, tmp_path):
    path = tmp_path / "ext.csv"
    _odd_table(items).to_csv(path, index=False)
    result = run_evaluate(
        EvalConfig(
            critics={"ext": str(path)},
            eval_data=str(synth_clips.dataset_dir),
            out_dir=tmp_path / "eval",
            n_boot=100,
            thumbnails=False,
        ),
        progress=False,
    )
    suite = result.metrics["ext"]
    joined = result.scores["ext"].rows
    direct = evaluate_predictions(
        [r["item"]["pc"] for r in joined],
        [r["score"] for r in joined],
        [r["expected_score"] for r in joined],
        n_boot=100,
    )
    assert suite.n == 10 and suite.n_parsed == 9 and suite.coverage == pytest.approx(0.9)
    assert json.dumps(suite.values, sort_keys=True) == json.dumps(direct.values, sort_keys=True)
    assert json.dumps(suite.intervals, sort_keys=True) == json.dumps(direct.intervals, sort_keys=True)
    summary = result.summary()["ext"]
    assert summary["source"]["missing"] == 6 and summary["source"]["unknown_rows"] == 2
    assert summary["calibration"]["n_with_probs"] == 0 and summary["ece_p_good"] is None
    warnings = result.warnings()
    assert f"ext: 6 of 16 clips have no score from ext ({path})" in warnings
    data = json.loads(result.report.json.read_text())
    listed = data["critics"][0]["skipped"]
    assert len(listed) == 6 and listed[0]["reason"] == "no score from ext in ext.csv"


def test_evaluate_command_with_a_model_and_a_table(tiny_critic, items, synth_clips, tmp_path):
    path = tmp_path / "ext.csv"
    _odd_table(items).to_csv(path, index=False)
    out = tmp_path / "eval"
    args = ["evaluate", "--critic", f"tiny={tiny_critic}", "--critic", f"ext={path}"]
    args += ["--data", str(synth_clips.dataset_dir), "--out", str(out), "--resamples", "50", "--no-thumbnails"]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "ext: scored 10 clips, 1 unparsed, 6 skipped" in proc.stdout
    assert f"6 of 16 clips have no score from ext ({path})" in proc.stdout
    assert "2 of 12 rows of" in proc.stdout and "calibration (ECE: 0 = calibrated):" in proc.stdout
    assert "warning: tiny: collapse: >= 80 % of predictions are 4" in proc.stdout
    data = json.loads((out / "evaluation_results.json").read_text())
    assert data["n_clips"] == 16  # one row per clip: the table's rows joined to the critic's by video
    both = [s for s in data["samples"] if s["predictions"][1]["decision"] != "skipped"]
    assert len(both) == 10 and all(s["predictions"][0]["score"] is not None for s in both)
    table = pd.read_csv(out / "comparison.csv", index_col=0)
    assert table.loc["ext", "n"] == 10 and table.loc["tiny", "n"] == 16

    bad = tmp_path / "bad.csv"
    pd.DataFrame([{"video": Path(items[0]["video_url"]).name, "score": "high"}]).to_csv(bad, index=False)
    proc = run_cli("evaluate", "--critic", f"ext={bad}", "--data", str(synth_clips.dataset_dir), "--out",
                   str(tmp_path / "e2"))  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: bad.csv row 0: score 'high' is not a number" in proc.stderr
    missing = run_cli("evaluate", "--critic", f"ext={tmp_path / 'none.csv'}", "--data", str(synth_clips.dataset_dir))
    assert missing.returncode == 2 and "scores table of critic 'ext' not found" in missing.stderr


@pytest.fixture(scope="module")
def shared_eval(tmp_path_factory) -> Path:
    """The 20 shared VideoPhy-2 clips as a prepared eval split (labels made up for the test: the shared folder holds
    AutoEval's predictions, not human labels)."""
    if not (SHARED_VIDEOS / "output_pc.csv").exists():
        pytest.skip(f"real VideoPhy-2 clips not present at {SHARED_VIDEOS} (a fresh clone lacks ../shared)")
    from recipe_lib.data.videophy2 import VideoPhy2Config, prepare_videophy2

    names = sorted(p.name for p in SHARED_VIDEOS.glob("*.mp4"))
    table = pd.DataFrame({"video_url": [f"examples/{n}" for n in names], "pc": [1 + i % 5 for i in range(len(names))]})
    folder = tmp_path_factory.mktemp("vp2eval")
    table.to_csv(folder / "eval.csv", index=False)
    out = folder / "prepared"
    prepare_videophy2(VideoPhy2Config(source=str(folder / "eval.csv"), out_dir=out, videos_dir=SHARED_VIDEOS))
    return out


def test_videophy2_autoeval_predictions_as_a_baseline(shared_eval, tmp_path):
    proc = run_cli(
        "evaluate", "--critic", f"autoeval={SHARED_VIDEOS / 'output_pc.csv'}", "--critic",
        f"autoeval-sa={SHARED_VIDEOS / 'output_sa.csv'}", "--data", str(shared_eval), "--out", str(tmp_path / "e"),
        "--resamples", "50", "--no-thumbnails",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "10 of 20 clips have no score from autoeval" in proc.stdout
    data = json.loads((tmp_path / "e" / "evaluation_results.json").read_text())
    source = data["summary"]["autoeval"]["source"]
    assert source["video_column"] == "videopath" and source["missing"] == 10 and source["unknown_rows"] == 0
    assert data["summary"]["autoeval"]["n"] == 10
    pc = pd.read_csv(SHARED_VIDEOS / "output_pc.csv", index_col=0)
    joined = {Path(s["video"]).name: s["predictions"][0]["score"] for s in data["samples"]}
    for _, row in pc.iterrows():  # names with commas, semicolons and apostrophes joined to the right clip
        assert joined[Path(row["videopath"]).name] == int(row["score"])
