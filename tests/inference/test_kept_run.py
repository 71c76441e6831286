"""A rerun whose local inputs and settings are unchanged takes the last run's plan from the store
(:mod:`recipe_lib.inference.kept_run`): the same result and files as planning again; and every change of what the
plan follows from (a clip's bytes, the table, a file missing last time, the settings) plans again and gives the new
result.

Each test copies three real synthetic clips into its own folder under a table that lists one of them twice (a
duplicate skip, which a kept plan may hold), and starts from a store holding their rows (scored once for the module
by the tiny critic), so only a change of content or settings runs the critic.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from recipe_lib.inference.plan import DUPLICATE, SETTLED_NS, score_files
from recipe_lib.inference.scoring import score_videos
from recipe_lib.inference.store import ResultStore
from recipe_lib.io import claim_outputs, writes_as
from recipe_lib.stages.score import ScoreStageConfig, run_score
from recipe_lib.video import file_digest
from support import demo_score_config

EXPORTS = ("scores.csv", "skipped.jsonl", "predictions.csv", "predictions.jsonl", "manifest.csv")


@dataclasses.dataclass
class Case:
    clips: list[Path]  # the three clips the table lists, in this test's folder
    spare: Path  # a fourth real clip, not listed
    table: Path
    out: Path
    model: Path

    def cfg(self, inputs: list | None = None, **kw: object):  # noqa: ANN201
        return demo_score_config(self.model, inputs or [self.table], self.out, workers=1, **kw)

    def score(self, **kw: object):  # noqa: ANN201
        return score_videos(self.cfg(**kw), progress=False)

    def write_table(self, labels: list[int], extra: list[str] = ()) -> None:
        """clip_0 (by a path relative to the table), clip_1, clip_2, clip_0 again, then ``extra``."""
        names = ["clips/clip_0.mp4", str(self.clips[1]), str(self.clips[2]), "clips/clip_0.mp4", *extra]
        with self.table.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["video_url", "pc"])
            writer.writerows(zip(names, labels))


def settle() -> None:
    """Wait until every file just written is older than SETTLED_NS: only then may a run record its inputs."""
    time.sleep(SETTLED_NS / 1e9 + 0.2)


@pytest.fixture(scope="module")
def stored(tiny_critic, synth_clips, tmp_path_factory):  # noqa: ANN001, ANN201
    """Four real clips and a store holding their rows, scored once."""
    clips = sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[:4]
    out = tmp_path_factory.mktemp("kept-run") / "out"
    first = score_videos(demo_score_config(tiny_critic, clips, out, workers=1), progress=False)
    assert first.n_scored_now == 4
    return clips, out / "results.sqlite"


@pytest.fixture
def case(stored, tiny_critic, tmp_path) -> Case:  # noqa: ANN001
    real, template = stored
    folder = tmp_path / "clips"
    folder.mkdir()
    clips = [folder / f"clip_{i}.mp4" for i in range(3)]
    for src, dst in zip(real, clips):
        shutil.copyfile(src, dst)
    c = Case(clips, real[3], tmp_path / "clips.csv", tmp_path / "out", tiny_critic)
    c.write_table([1, 2, 3, 4])
    writes_as("score")(claim_outputs)(c.out, score_files())  # the folder is the score command's, as after a run
    with sqlite3.connect(template) as src, sqlite3.connect(c.out / "results.sqlite") as dst:
        src.backup(dst)
    settle()
    return c


def _same(a, b) -> None:  # noqa: ANN001
    """Two results of the same run: equal counts, rows, skips and summary (but the seconds)."""
    for name in ("n_inputs", "n_scored_now", "n_cached", "repeated", "warnings", "digest", "reusable", "unparsed"):
        assert getattr(a, name) == getattr(b, name), name
    assert list(a.rows) == list(b.rows) and list(a.skipped) == list(b.skipped)
    assert {**a.summary(), "seconds": 0} == {**b.summary(), "seconds": 0}


def test_an_unchanged_rerun_takes_the_stored_plan(case):
    first = case.score()
    assert not first.kept_plan and (first.n_scored_now, first.n_cached) == (0, 3)
    assert [s["reason"] for s in first.skipped] == [DUPLICATE]
    kept = case.score()
    assert kept.kept_plan and (kept.n_inputs, kept.n_scored_now, kept.n_cached) == (4, 0, 3)
    assert kept.digest == first.digest and list(kept.skipped) == list(first.skipped)
    assert [r["item"]["pc"] for r in kept.rows] == [1, 2, 3]
    assert kept.rows[0]["video"] == str(case.table.parent / "clips/clip_0.mp4")

    # Against planning again (the stamp forgotten): the same result, and the same scores.csv written from it.
    scores = (case.out / "scores.csv").read_bytes()
    with ResultStore(case.out) as store:
        store.set_run_stamp("pc", None)
    planned = case.score()
    assert not planned.kept_plan
    _same(kept, planned)
    (case.out / "scores.csv").unlink()  # written again from the kept plan's rows
    again = case.score()
    assert again.kept_plan and (case.out / "scores.csv").read_bytes() == scores
    summary = json.loads((case.out / "summary.json").read_text())
    assert (summary["inputs"], summary["from_cache"], summary["skipped"]) == (4, 3, 1)


def test_the_stage_output_is_the_same_and_another_threshold_decides_again(case):
    def stage(threshold: float):  # noqa: ANN202
        return run_score(ScoreStageConfig(score=case.cfg(), threshold=threshold, report=True), progress=False)

    first = stage(4)
    assert not first.scores.kept_plan and first.filtered.counts["keep"] == 0
    files = {name: (case.out / name).read_bytes() for name in (*EXPORTS, "report.html", "evaluation_results.json")}
    lines = first.summary_lines()
    kept = stage(4)
    assert kept.scores.kept_plan
    assert {name: (case.out / name).read_bytes() for name in files} == files
    assert [line.rsplit(",", 1)[0] for line in kept.summary_lines()] == [line.rsplit(",", 1)[0] for line in lines]
    # The threshold is not part of the plan: the plan is kept, the decisions are made again.
    low = stage(2)
    assert low.scores.kept_plan and low.filtered.counts["keep"] == 3
    manifest = (case.out / "manifest.csv").read_text()
    assert manifest != files["manifest.csv"].decode() and "reject" not in manifest.split("\n", 1)[1]


def test_a_clip_rewritten_under_its_path_is_scored_again(case):
    case.score()
    assert case.score().kept_plan
    before = os.stat(case.clips[1])
    old = file_digest(case.clips[1])
    shutil.copyfile(case.spare, case.clips[1])  # other bytes, same path
    os.utime(case.clips[1], ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    changed = case.score()
    assert not changed.kept_plan and (changed.n_scored_now, changed.n_cached) == (0, 3)  # the spare's row is stored
    row = next(r for r in changed.rows if r["video"] == str(case.clips[1]))
    assert row["video_sha256"] == file_digest(case.spare) != old
    assert str(case.clips[1]) in (case.out / "scores.csv").read_text()


def test_an_edited_table_is_planned_again(case):
    case.score()
    assert case.score().kept_plan
    case.write_table([5, 2, 3, 4])  # the first clip's label fixed
    edited = case.score()
    assert not edited.kept_plan and edited.n_scored_now == 0
    assert [r["item"]["pc"] for r in edited.rows] == [5, 2, 3]
    with (case.out / "scores.csv").open() as fh:
        assert [row["label"] for row in csv.DictReader(fh)] == ["5", "2", "3"]


def test_a_file_missing_last_time_is_looked_for_again(case):
    later = case.clips[0].parent / "later.mp4"
    case.write_table([1, 2, 3, 4, 5], extra=[str(later)])
    settle()
    first = case.score()
    assert sorted(s["reason"] for s in first.skipped) == [DUPLICATE, f"video not found: {later}"]
    again = case.score()
    assert not again.kept_plan and len(again.skipped) == 2  # a run with a missing clip records no plan
    shutil.copyfile(case.spare, later)
    found = case.score()
    assert not found.kept_plan and (found.n_inputs, found.n_cached, len(found.skipped)) == (5, 4, 1)
    assert found.rows[-1]["video"] == str(later) and found.rows[-1]["item"]["pc"] == 5


def test_other_video_settings_score_again(case):
    case.score()
    assert case.score().kept_plan
    slower = case.score(video_overrides={"fps": 2.0})
    assert not slower.kept_plan and (slower.n_scored_now, slower.n_cached) == (3, 0)
    assert case.score(video_overrides={"fps": 2.0}).kept_plan  # recorded for these settings in turn
    back = case.score()
    assert not back.kept_plan and (back.n_scored_now, back.n_cached) == (0, 3)


def test_a_store_changed_from_outside_or_a_folder_input_plans_again(case):
    case.score()
    assert case.score().kept_plan
    with sqlite3.connect(case.out / "results.sqlite") as db:  # a row edited with a SQLite tool: broken JSON
        db.execute("UPDATE results SET row = substr(row, 2) WHERE key = (SELECT key FROM run_keys LIMIT 1)")
    repaired = case.score()
    assert not repaired.kept_plan and repaired.n_scored_now == 1 and len(repaired.rows) == 3
    # A folder's listing can change without a file of it changing: always planned.
    folder = case.cfg([case.clips[0].parent])
    assert [score_videos(folder, progress=False).kept_plan for _ in range(2)] == [False, False]
