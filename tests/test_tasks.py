"""Tasks pc / sa / rule (recipe_lib.tasks): parsing, per-task requests, prompts, rule answers, the joint metric, the
rule metric and keeping on sa or joint; with the real tiny critic on real rendered clips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recipe_lib import tasks as T
from recipe_lib.errors import ConfigError, DataError
from recipe_lib.evaluation.metrics import joint_suite, rule_suite
from recipe_lib.prompts import load_prompt

# -- names and options --------------------------------------------------------------------------------------------


def test_parse_tasks_orders_and_dedupes():
    assert T.parse_tasks(None) == ("pc",)
    assert T.parse_tasks("sa, pc,sa") == ("sa", "pc")
    assert T.parse_tasks(["pc", "rule"]) == ("pc", "rule")


@pytest.mark.parametrize(("value", "hint"), [("physics", "valid tasks: pc, sa, rule"), ("joint", "--task pc,sa")])
def test_unknown_task_lists_the_valid_ones(value, hint):
    with pytest.raises(ConfigError) as exc:
        T.parse_tasks(value)
    assert f"unknown task '{value}'" in exc.value.message
    assert hint in exc.value.hint


def test_keep_on_needs_its_tasks():
    assert T.check_keep_on(None, ("pc", "sa")) == "pc"
    assert T.check_keep_on(None, ("sa", "rule")) == "sa"
    assert T.check_keep_on(None, ("rule",)) is None
    with pytest.raises(ConfigError) as exc:
        T.check_keep_on("joint", ("pc",))
    assert "needs the task(s) sa" in exc.value.message and "--task pc,sa" in exc.value.hint


def test_pc_keys_are_unchanged_and_other_tasks_are_keyed_by_their_text():
    assert T.key_parts("pc", {"video_url": "a.mp4", "caption": "x"}) == {}
    sa = T.key_parts("sa", {T.PROMPT_FIELDS: {"caption": "a ball"}})
    assert sa == {"task": "sa", "fields": {"caption": "a ball"}}
    one, other = ({T.PROMPT_FIELDS: {"rule": r}} for r in ("r", "s"))
    assert T.key_parts("rule", one) != T.key_parts("rule", other)


# -- requests -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "rules"),
    [(None, []), ("", []), (float("nan"), []), ("a\n b \n\n", ["a", "b"]), ('["a", "b"]', ["a", "b"]), (["a"], ["a"])],
)
def test_rule_cells_in_every_form(cell, rules):
    assert T.parse_rules(cell) == rules


def test_sa_needs_a_caption_column_and_counts_clips_without_one():
    with pytest.raises(DataError) as exc:
        T.prepare_items("sa", [{"video_url": "a.mp4"}, {"video_url": "b.mp4"}])
    assert "column 'caption'" in exc.value.message and "loose video files" in exc.value.message
    assert "--caption-column" in exc.value.hint
    items = [{"video_url": "a.mp4", "caption": "a ball falls"}, {"video_url": "b.mp4", "caption": "  "}]
    out, skipped = T.prepare_items("sa", items)
    assert [it[T.PROMPT_FIELDS] for it in out] == [{"caption": "a ball falls"}]
    assert skipped == [{"video": "b.mp4", "reason": "no caption in column 'caption' (task sa needs one)"}]


def test_rule_items_one_per_rule_labelled_by_their_column():
    with pytest.raises(DataError) as exc:
        T.prepare_items("rule", [{"video_url": "a.mp4", "pc": 3}])
    assert "physics_rules_followed" in exc.value.message
    row = {
        "video_url": "a.mp4",
        "physics_rules_followed": "falls down\nstays solid",
        "physics_rules_unfollowed": '["keeps its size"]',
        "physics_rules_cannot_be_determined": "",
    }
    out, skipped = T.prepare_items("rule", [row, {"video_url": "b.mp4", "physics_rules_followed": ""}])
    assert [(it["rule"], it["rule_label"]) for it in out] == [
        ("falls down", "followed"),
        ("stays solid", "followed"),
        ("keeps its size", "violated"),
    ]
    assert skipped[0]["video"] == "b.mp4" and "no physical rule listed" in skipped[0]["reason"]


def test_prompts_hold_their_placeholders_and_filling_neutralises_control_tokens():
    sa, rule = load_prompt("semantic_adherence"), load_prompt("physical_rule")
    T.check_task_prompt("sa", sa)
    T.check_task_prompt("rule", rule)
    with pytest.raises(ConfigError, match=r"no \{caption\} placeholder"):
        T.check_task_prompt("sa", load_prompt("video_reward"))
    filled = T.fill_prompt(sa, {"caption": "a ball<|im_end|> falls"})
    assert "{caption}" not in filled.user_prompt and "a ball" in filled.user_prompt
    assert "<|im_end|>" not in filled.user_prompt
    assert T.fill_prompt(sa, None) is sa


def test_rule_answers_read_as_three_options():
    expected = T.finish_row("rule", {"score": 5, "probs": [0.1, 0.1, 0.2, 0.1, 0.5], "trials": []})
    assert expected["judgement"] == "followed" and expected["score"] == 3
    assert expected["judgement_probs"] == pytest.approx({"violated": 0.25, "cannot_tell": 0.25, "followed": 0.5})
    assert expected["option_share"] == pytest.approx(0.4)
    trials = [{"text": "<answer>4</answer>", "score": 4, "error": None}]
    unparsed = T.finish_row("rule", {"score": 4, "probs": None, "trials": trials})
    assert unparsed["judgement"] is None and unparsed["score"] is None
    assert unparsed["parse_error"] == "answer 4 is not one of the options 1-3"
    votes = [{"score": 1, "error": None}, {"score": 1, "error": None}, {"score": 3, "error": None}]
    assert T.finish_row("rule", {"probs": None, "trials": votes})["judgement"] == "violated"
    assert T.finish_row("pc", {"score": 5, "probs": [0, 0, 0, 0, 1]})["score"] == 5


# -- metrics ----------------------------------------------------------------------------------------------------------


def test_joint_suite_counts_clips_with_both_scores_high():
    records = [
        {"pc_value": 4.5, "sa_value": 4.2, "pc_label": 5, "sa_label": 5},  # joint, labelled joint
        {"pc_value": 4.5, "sa_value": 2.0, "pc_label": 5, "sa_label": 1},  # not joint, labelled not
        {"pc_value": 4.5, "sa_value": 4.9, "pc_label": 2, "sa_label": 5},  # joint, labelled not (false positive)
        {"pc_value": None, "sa_value": 4.9, "pc_label": 5, "sa_label": 5},  # unparsed pc: not joint, a miss
    ]
    suite = joint_suite(records, threshold=4, n_boot=200, seed=1)
    assert suite.n == 4 and suite.n_parsed == 3 and suite.n_labelled == 4
    assert suite.values["joint_rate"] == pytest.approx(2 / 4)
    assert suite.values["label_joint_rate"] == pytest.approx(2 / 4)
    assert suite.values["accuracy"] == pytest.approx(2 / 4)  # the unparsed clip counts as wrong
    assert suite.values["precision"] == pytest.approx(1 / 2) and suite.values["recall"] == pytest.approx(1.0)
    assert suite.confusion.tolist() == [[1, 1, 0], [0, 1, 1]]
    lo, hi = suite.intervals["joint_rate"]
    assert 0 <= lo <= suite.values["joint_rate"] <= hi <= 1 and lo < hi
    assert json.loads(json.dumps(suite.to_dict()))["metrics"]["joint_rate"] == pytest.approx(0.5)


def test_rule_suite_accuracy_and_per_class_counts():
    labels = ["followed", "followed", "violated", "cannot_tell", "followed"]
    judged = ["followed", "violated", "violated", None, "followed"]
    suite = rule_suite(labels, judged, n_boot=100)
    assert suite.values["accuracy"] == pytest.approx(3 / 5)
    assert suite.values["accuracy_parsed"] == pytest.approx(3 / 4)
    assert suite.values["followed_recall"] == pytest.approx(2 / 3)
    assert suite.label_counts == {"violated": 1, "cannot_tell": 1, "followed": 3}
    assert suite.judgement_counts == {"violated": 2, "cannot_tell": 0, "followed": 2, "unparsed": 1}
    assert suite.confusion[1].tolist() == [0, 0, 0, 1]
    assert suite.majority_label == "followed" and suite.majority_accuracy == pytest.approx(0.6)
    with pytest.raises(DataError, match="rule label #0"):
        rule_suite(["maybe"], ["followed"])


# -- filtering --------------------------------------------------------------------------------------------------------


def _row(video, task, score, expected, **item):
    return {"video": video, "task": task, "score": score, "expected_score": expected, "item": item}


def test_keep_on_joint_decides_per_clip(tmp_path):
    from recipe_lib.evaluation.filtering import joint_records, write_joint_filter_outputs

    pc = [_row("a", "pc", 5, 4.6, pc=5, sa=5), _row("b", "pc", 5, 4.4, pc=5, sa=1), _row("c", "pc", None, None)]
    pc.append(_row("d", "pc", 4, 4.1))
    sa = [_row("a", "sa", 5, 4.8), _row("b", "sa", 2, 2.2), _row("c", "sa", 5, 5.0)]
    sa_skipped = [{"video": "d", "reason": "no caption in column 'caption' (task sa needs one)"}]
    records = joint_records(pc, sa, (), sa_skipped, threshold=4)
    assert [r["joint"] for r in records] == [1, 0, None, None]
    assert records[0]["label_joint"] == 1 and records[1]["label_joint"] == 0
    out = write_joint_filter_outputs(records, [{"video": "e", "reason": "video not found: e"}], tmp_path, 4)
    decisions = {r["video"]: (r["decision"], r["reason"]) for r in out.records}
    assert decisions["a"][0] == "keep" and decisions["b"] == ("reject", "pc 4.400 >= 4, sa 2.200 < 4")
    assert decisions["c"][0] == "unparsed" and decisions["c"][1].startswith("pc: ")
    assert decisions["d"] == ("skipped", "sa: no caption in column 'caption' (task sa needs one)")
    assert decisions["e"] == ("skipped", "video not found: e")
    assert out.counts == {"keep": 1, "reject": 1, "unparsed": 1, "skipped": 2}
    header = (tmp_path / "manifest.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["video", "decision", "value"] and "sa_value" in header


# -- synthetic SA probe ---------------------------------------------------------------------------------------------


def test_synthetic_sa_probe_matches_half_and_mismatches_another_scene(synth_clips):
    import datasets

    ds = datasets.load_from_disk(str(synth_clips.dataset_dir))
    rows = list(ds)
    labels = [r["sa_caption_label"] for r in rows]
    assert labels.count(1) == len(rows) // 2 and set(labels) == {1, 5}
    own = {r["caption"]: r["scene"] for r in rows}
    for r in rows:
        assert r["sa"] == 5  # the clip's own caption still describes it
        if r["sa_caption_label"] == 5:
            assert r["sa_caption"] == r["caption"]
        else:
            other = own[r["sa_caption"]]
            assert other != r["scene"] and {other, r["scene"]} != {"free_fall", "bounce"}


def test_sa_probe_is_seeded_and_leaves_other_columns_alone():
    from recipe_lib.data.synthetic import add_sa_captions

    records = [{"scene": s, "caption": f"{s} caption", "pc": 5} for s in ("free_fall", "collision", "bounce") * 4]
    a, b = add_sa_captions(records, 7), add_sa_captions(records, 7)
    assert a == b and a != add_sa_captions(records, 8)
    assert [{k: r[k] for k in ("scene", "caption", "pc")} for r in a] == records
    single = add_sa_captions([{"scene": "bounce", "caption": "x"}] * 4, 0)
    assert {r["sa_caption_label"] for r in single} == {5}


# -- with the real tiny critic ----------------------------------------------------------------------------------------


def test_sa_caption_reaches_the_rendered_prompt(tiny_critic, synth_clips):
    from transformers import AutoProcessor

    from recipe_lib.inference.requests import clip_text
    from recipe_lib.profiles import get_profile

    processor = AutoProcessor.from_pretrained(str(tiny_critic))
    item = {"video_url": str(synth_clips.out_dir / "videos" / "x.mp4"), T.PROMPT_FIELDS: {"caption": "a red cube"}}
    text = clip_text(processor, load_prompt("semantic_adherence"), item, get_profile("demo").video, "expected", False)
    assert "Description: a red cube" in text and "{caption}" not in text and text.endswith("<answer>\n")


def _stage(tiny_critic, inputs, out, **kw):
    from recipe_lib.stages.score import ScoreStageConfig
    from support import demo_score_config

    score = demo_score_config(tiny_critic, inputs, out, prompt="video_reward_compact", caption_column="sa_caption")
    return ScoreStageConfig(score=score, report=False, sa_column="sa_caption_label", **kw)


def test_score_stage_pc_sa_rule_keyed_apart_and_resumable(tiny_critic, synth_clips, tmp_path):
    from recipe_lib.inference.store import read_store
    from recipe_lib.stages.score import run_score

    out = tmp_path / "run"
    cfg = _stage(tiny_critic, [synth_clips.dataset_dir], out, tasks=("pc", "sa", "rule"), keep_on="joint")
    first = run_score(cfg, progress=False)
    n = synth_clips.n_clips
    assert [len(first.by_task[t].rows) for t in ("pc", "sa")] == [n, n]
    rule_rows = first.by_task["rule"].rows
    assert len(rule_rows) > n and all(r["judgement"] in T.RULE_CLASSES for r in rule_rows)
    assert all(sum(r["judgement_probs"].values()) == pytest.approx(1.0) for r in rule_rows)
    stored = read_store(out)
    assert len(stored) == 2 * n + len(rule_rows) == len({r["key"] for r in stored})
    assert {r["task"] for r in stored} == {"pc", "sa", "rule"}
    sa_rows = first.by_task["sa"].rows
    assert all(r["item"][T.PROMPT_FIELDS]["caption"] == r["item"]["sa_caption"] for r in sa_rows)
    assert set(first.suites) == {"pc", "sa", "rule", "joint"}
    assert first.suites["joint"].n == n and first.suites["sa"].n == n
    assert first.filtered.counts["keep"] + first.filtered.counts["reject"] + first.filtered.counts["unparsed"] == n
    for name in ("scores.csv", "scores_sa.csv", "scores_rule.csv", "joint.csv", "manifest.csv", "summary_sa.json"):
        assert (out / name).is_file(), name
    assert any(line.startswith("[joint] joint (sa and pc >= 4)") for line in first.summary_lines())

    again = run_score(cfg, progress=False)
    assert all(r.n_scored_now == 0 and r.n_cached == len(r.rows) for r in again.by_task.values())
    sa_only = run_score(_stage(tiny_critic, [synth_clips.dataset_dir], out, tasks=("sa",)), progress=False)
    assert sa_only.by_task["sa"].n_cached == n and sa_only.keep_on == "sa"
    pc_row = next(r for r in first.by_task["pc"].rows)
    sa_row = next(r for r in sa_rows if r["video"] == pc_row["video"])
    assert pc_row["key"] != sa_row["key"]


def test_sa_on_loose_files_fails_before_any_scoring(tiny_critic, synth_clips, tmp_path):
    from recipe_lib.stages.score import run_score

    clip = sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[0]
    cfg = _stage(tiny_critic, [clip], tmp_path / "loose", tasks=("pc", "sa"))
    with pytest.raises(DataError, match="no input has a column 'sa_caption'"):
        run_score(cfg, progress=False)
    assert not (tmp_path / "loose" / "results.sqlite").exists()


def _videophy2_like(synth_clips, tmp_path):
    """A VideoPhy-2-shaped table (real rendered clips) prepared by the real loader: captions, sa, pc and the three
    rule columns in the forms a source may give them, one row without a caption and one sa label that is no score."""
    import datasets
    import pandas as pd

    from recipe_lib.data.videophy2 import VideoPhy2Config, prepare_videophy2

    rows = []
    for i, r in enumerate(datasets.load_from_disk(str(synth_clips.dataset_dir)).select(range(6))):
        rules = r["physics_rules_followed"].split("\n")
        rows.append(
            {
                "video_url": r["video_url"],
                "caption": "" if i == 0 else r["caption"],
                "sa": "2.5" if i == 1 else (5 if i % 2 else 2),
                "pc": r["pc"],
                "physics_rules_followed": json.dumps(rules[:1]),
                "physics_rules_unfollowed": r["physics_rules_unfollowed"],
                "physics_rules_cannot_be_determined": "Nothing is said about the colour." if i == 2 else "",
            }
        )
    table = tmp_path / "videophy2_like.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    prepared = prepare_videophy2(VideoPhy2Config(source=str(table), out_dir=tmp_path / "vp2", progress=False))
    return prepared


def test_videophy2_like_data_through_score_and_evaluate(tiny_critic, synth_clips, tmp_path):
    from recipe_lib.stages.evaluate import EvalConfig, run_evaluate
    from recipe_lib.stages.score import ScoreStageConfig, run_score
    from support import demo_score_config

    prepared = _videophy2_like(synth_clips, tmp_path)
    assert prepared.n_kept == 6 and [c["row"] for c in prepared.cleared] == [1]
    assert "labels_cleared" in json.loads(prepared.report_path.read_text())
    out = tmp_path / "score"
    score = demo_score_config(tiny_critic, [prepared.out_dir], out, prompt="video_reward_compact")
    result = run_score(ScoreStageConfig(score=score, report=True, tasks=("pc", "sa", "rule")), progress=False)
    sa = result.by_task["sa"]
    assert len(sa.rows) == 5
    assert [s["reason"] for s in sa.skipped] == ["no caption in column 'caption' (task sa needs one)"]
    joint = result.suites["joint"]
    # the clip without a caption has labels but no sa result (not joint, counted); the cleared sa label is unlabelled
    assert joint.n == 6 and joint.n_parsed == 5 and joint.n_labelled == 5
    rules = result.by_task["rule"].rows
    labels = sorted({r["item"]["rule_label"] for r in rules})
    assert labels == ["cannot_tell", "followed", "violated"]
    assert result.suites["rule"].n == len(rules)
    data = json.loads((out / "evaluation_results.json").read_text())
    assert set(data["tasks"]) == {"sa", "rule", "joint"}

    evaluated = run_evaluate(
        EvalConfig(
            critics={"tiny": str(tiny_critic)},
            eval_data=str(prepared.out_dir),
            out_dir=tmp_path / "eval",
            tasks=("pc", "sa", "rule"),
            n_boot=50,
            thumbnails=False,
            batch_size=4,
        ),
        progress=False,
    )
    suites = evaluated.task_metrics["tiny"]
    assert set(suites) == {"sa", "joint", "rule"}
    assert suites["rule"].values["accuracy"] == pytest.approx(result.suites["rule"].values["accuracy"])
    table = (tmp_path / "eval" / "tasks.csv").read_text()
    assert "joint_rate" in table and "followed_recall" in table
    assert evaluated.scores["tiny"].n_cached == 0 and evaluated.task == "pc"
    assert np.isfinite(suites["joint"].values["joint_rate"])


def test_cli_rejects_bad_task_options_before_any_work(synth_clips, tmp_path):
    from support import run_cli

    out = tmp_path / "cli"
    r = run_cli("score", str(synth_clips.dataset_dir), "--out", str(out), "--task", "pc,joint")
    assert r.returncode == 2 and "error: unknown task 'joint'" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("score", str(synth_clips.dataset_dir), "--out", str(out), "--task", "pc", "--keep-on", "joint")
    assert r.returncode == 2 and "--keep-on joint needs the task(s) sa" in r.stderr
    assert not out.exists()


def test_real_videophy2_rows_give_sa_and_rule_requests(shared_videos, tmp_path):
    """VideoPhy-2's own example rows (AutoEval's outputs: sa and pc scores, rules with 0 violated / 1 followed / 2
    cannot tell) as a table the loader prepares; every task gets its requests from them."""
    import pandas as pd

    from recipe_lib.data.videophy2 import VideoPhy2Config, prepare_videophy2
    from support import SHARED_VIDEOS

    sa = pd.read_csv(SHARED_VIDEOS / "output_sa.csv")
    pc = pd.read_csv(SHARED_VIDEOS / "output_pc.csv")
    rules = pd.read_csv(SHARED_VIDEOS / "output_rule.csv")
    table = sa.rename(columns={"score": "sa", "videopath": "video_url"})[["video_url", "caption", "sa"]]
    table["pc"] = pc.set_index("videopath").loc[table["video_url"], "score"].to_numpy()
    columns = {code: col for col, name in T.RULE_COLUMNS.items() for code, n in T.AUTOEVAL_CODES.items() if n == name}
    for col in T.RULE_COLUMNS:
        table[col] = ""
    extra = []
    for _, r in rules.iterrows():  # a rule of a clip the sa table lacks becomes a row of its own (no caption)
        column = columns[int(r["score"])]
        hit = table.index[table["video_url"] == r["videopath"]]
        if len(hit):
            before = table.loc[hit[0], column]
            table.loc[hit[0], column] = f"{before}\n{r['rule']}" if before else r["rule"]
        else:
            extra.append({"video_url": r["videopath"], "caption": "", "sa": None, "pc": 3, column: r["rule"]})
    table = pd.concat([table, pd.DataFrame(extra)], ignore_index=True)
    path = tmp_path / "videophy2_examples.csv"
    table.to_csv(path, index=False)
    prepared = prepare_videophy2(
        VideoPhy2Config(source=str(path), out_dir=tmp_path / "vp2", videos_dir=SHARED_VIDEOS, progress=False)
    )
    assert prepared.n_kept >= 10 and sum(prepared.sa_counts.values()) == len(sa)
    from recipe_lib.inference.plan import resolve_items

    items = resolve_items([str(prepared.out_dir)])
    sa_items, sa_skips = T.prepare_items("sa", items)
    assert len(sa_items) == len(sa) and len(sa_skips) == len(extra)
    rule_items, _ = T.prepare_items("rule", items)
    assert len(rule_items) == len(rules)
    wanted = {(r["rule"], T.AUTOEVAL_CODES[int(r["score"])]) for _, r in rules.iterrows()}
    assert {(it["rule"], it["rule_label"]) for it in rule_items} == wanted
