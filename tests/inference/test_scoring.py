"""Scoring with the real tiny Qwen2.5-VL on real mp4 files: both modes, skips, cache, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recipe_lib.config import SamplingSettings
from recipe_lib.evaluation.metrics import metrics_from_rows
from recipe_lib.inference.scoring import score_videos
from recipe_lib.inference.store import read_store
from recipe_lib.profiles import get_profile
from support import REPO, demo_score_config, run_cli, store_count

SNAPSHOTS = Path(__file__).parent.parent / "snapshots"


_cfg = demo_score_config


def test_expected_mode_on_dataset(tiny_critic, synth_clips, tmp_path):
    result = score_videos(_cfg(tiny_critic, [synth_clips.dataset_dir], tmp_path), progress=False)
    assert len(result.rows) == synth_clips.n_clips and not result.skipped
    for row in result.rows:
        assert abs(sum(row["probs"]) - 1) < 1e-5 and 1 <= row["expected_score"] <= 5
        assert row["score"] in (1, 2, 3, 4, 5) and 0 < row["digit_mass"] <= 1
        assert row["item"]["pc"] in (1, 2, 3, 4, 5)
    m = metrics_from_rows(result.rows)
    assert m.n == synth_clips.n_clips and m.coverage == 1.0
    table = (tmp_path / "scores.csv").read_text().splitlines()
    assert len(table) == synth_clips.n_clips + 1
    again = score_videos(_cfg(tiny_critic, [synth_clips.dataset_dir], tmp_path), progress=False)
    assert again.n_scored_now == 0 and again.n_cached == synth_clips.n_clips
    assert [r["key"] for r in again.rows] == [r["key"] for r in result.rows]


def test_generate_mode_counts_unparsed(tiny_critic, synth_clips, tmp_path):
    clips = sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[:3]
    cfg = _cfg(tiny_critic, clips, tmp_path, mode="generate")
    cfg.sampling = SamplingSettings(max_new_tokens=6, trials=2, temperature=1.0, seed=5)
    result = score_videos(cfg, progress=False)
    assert len(result.rows) == 3
    for row in result.rows:
        assert len(row["trials"]) == 2 and row["raw_output"] == row["trials"][0]["text"]
        if row["score"] is None:
            assert row["parse_error"]  # the untrained critic babbles: the reason is recorded, the row kept
    assert result.summary()["unparsed"] == sum(r["score"] is None for r in result.rows)
    # Same seed and settings in a fresh output folder -> the same sampled answers.
    cfg2 = _cfg(tiny_critic, clips, tmp_path / "b", mode="generate")
    cfg2.sampling = cfg.sampling
    again = score_videos(cfg2, progress=False)
    assert [r["trials"] for r in again.rows] == [r["trials"] for r in result.rows]


def test_bad_inputs_are_counted_skips(tiny_critic, synth_clips, tmp_path):
    good = sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[:2]
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(good[0].read_bytes()[:300])
    missing = tmp_path / "missing.mp4"
    result = score_videos(
        _cfg(tiny_critic, [*good, empty, text, truncated, missing, good[0]], tmp_path / "out"), progress=False
    )
    assert len(result.rows) == 2
    reasons = {Path(s["video"]).name: s["reason"] for s in result.skipped}
    assert set(reasons) == {"empty.mp4", "notes.mp4", "cut.mp4", "missing.mp4"}
    assert "0 bytes" in reasons["empty.mp4"] and "not found" in reasons["missing.mp4"]
    assert "not a readable video" in reasons["notes.mp4"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["skipped"] == 4 and summary["scored"] == 2
    assert len((tmp_path / "out" / "skipped.jsonl").read_text().splitlines()) == 4


def test_duplicate_paths_scored_once(tiny_critic, synth_clips, tmp_path):
    clip = sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[0]
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(clip.read_bytes())
    result = score_videos(_cfg(tiny_critic, [clip, copy], tmp_path / "o"), progress=False)
    assert len(result.rows) == 1 and len(result.skipped) == 1 and "duplicate" in result.skipped[0]["reason"]


def test_real_videophy2_clips(tiny_critic, shared_videos, tmp_path):
    result = score_videos(_cfg(tiny_critic, [shared_videos[0].parent], tmp_path), progress=False)
    assert len(result.rows) == len(shared_videos) and not result.skipped


def test_kill_midway_then_resume(tiny_critic, synth_clips, tmp_path):
    """SIGKILL a scoring run after some batches landed; the rerun completes with no lost and no duplicated rows,
    and the same results as an uninterrupted run."""
    videos = str(synth_clips.out_dir / "videos")
    args = ["score", videos, "--model", str(tiny_critic), "--batch-size", "1", "--workers", "1"]
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "recipe_lib.cli", *args, "--out", str(out)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    results = out / "results.sqlite"
    deadline = time.time() + 120
    while time.time() < deadline:
        if store_count(results) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    landed = store_count(results)
    assert 3 <= landed < synth_clips.n_clips, "the run should have been killed midway"
    done = run_cli(*args, "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = read_store(out)
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == synth_clips.n_clips
    reference = run_cli(*args, "--out", str(tmp_path / "whole"))
    assert reference.returncode == 0, reference.stderr
    ref_rows = {r["key"]: r for r in read_store(tmp_path / "whole")}
    assert set(ref_rows) == set(keys)
    for r in rows:
        assert r["score"] == ref_rows[r["key"]]["score"]
        assert abs(r["expected_score"] - ref_rows[r["key"]]["expected_score"]) < 1e-4


def test_second_writer_is_refused(tiny_critic, synth_clips, tmp_path):
    from recipe_lib.errors import RecipeError
    from recipe_lib.inference.plan import SCORE_FILES
    from recipe_lib.inference.store import ResultStore
    from recipe_lib.io import claim_outputs

    claim_outputs(tmp_path, SCORE_FILES, owner="score")  # what the first run did before opening its store
    with ResultStore(tmp_path / "results.sqlite"), pytest.raises(RecipeError, match="another run"):
        score_videos(_cfg(tiny_critic, [synth_clips.dataset_dir], tmp_path), progress=False)


@pytest.mark.parametrize("prompt", ["video_reward", "video_reward_with_thinking"])
def test_prompt_snapshot(tiny_critic, prompt):
    """The rendered chat text of each shipped prompt is pinned, so prompt drift shows up in review."""
    from transformers import AutoProcessor

    from recipe_lib.inference.hf import render_prompt
    from recipe_lib.prompts import load_prompt

    processor = AutoProcessor.from_pretrained(tiny_critic)
    text = render_prompt(
        processor,
        load_prompt(prompt),
        "/clips/a.mp4",
        get_profile("demo").video,
        caption=None,
        answer_prefix=prompt == "video_reward",
    )
    snap = SNAPSHOTS / f"{prompt}.txt"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        snap.parent.mkdir(exist_ok=True)
        snap.write_text(text)
    assert text == snap.read_text(), f"rendered prompt changed; review and rerun with UPDATE_SNAPSHOTS=1 ({snap})"
    assert text.count("<|video_pad|>") == 1


def test_cli_user_mistakes_are_one_line(tiny_critic, synth_clips, tmp_path):
    r = run_cli("score", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "o"), "--model", str(tiny_critic))
    assert (
        r.returncode == 1 and "1 skipped" in r.stdout and "not found" in r.stdout and "nothing was scored" in r.stderr
    )
    clip = str(sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[0])
    r = run_cli("score", clip, "--out", str(tmp_path / "o"), "--model", str(tmp_path / "no-model"))
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr
    bad = tmp_path / "p.yaml"
    bad.write_text("system_prompt: a\nuser_promt: b\n")
    r = run_cli("score", "x.mp4", "--out", str(tmp_path / "o"), "--model", str(tiny_critic), "--prompt", str(bad))
    assert r.returncode == 2 and "unknown key 'user_promt'" in r.stderr and "Traceback" not in r.stderr


def _clips(synth_clips) -> list[Path]:  # noqa: ANN001
    return sorted((synth_clips.out_dir / "videos").glob("*.mp4"))


def test_the_digest_cache_survives_a_rerun_and_a_changed_file_is_hashed_again(tiny_critic, synth_clips, tmp_path):
    """Planning keeps each file's sha256 in the store by path and stat signature: a rerun stats its files and reads
    none; a file rewritten under the same path, even with its old size and mtime put back, is read again."""
    import shutil

    from recipe_lib.inference.plan import SETTLED_NS, DigestCache, iter_plan, plan_setup, resolve_settings
    from recipe_lib.inference.store import FileDigests
    from recipe_lib.video import file_digest

    real = _clips(synth_clips)
    folder = tmp_path / "clips"
    folder.mkdir()
    paths = [folder / f"clip_{i}.mp4" for i in range(3)]
    for src, dst in zip(real, paths):
        shutil.copyfile(src, dst)
    out = tmp_path / "out"
    cfg, _ = resolve_settings(_cfg(tiny_critic, [folder], out))
    setup = plan_setup(cfg)
    time.sleep(SETTLED_NS / 1e9 + 0.2)  # a file written this recently is hashed but not remembered

    def plan() -> tuple[dict[str, str], int]:
        digests = DigestCache(FileDigests(out))
        keyed = [
            (it["video_url"], it["video_sha256"]) for c in iter_plan(cfg, setup, digests=digests) for _, it in c.keyed
        ]
        digests.close()
        return dict(keyed), digests.hashed

    first, hashed = plan()
    assert hashed == 3 and first == {str(p): file_digest(p) for p in paths}
    again, hashed = plan()
    assert hashed == 0 and again == first  # only stat'ed
    # Same path, same size, other bytes, and the old mtime put back: the ctime still tells.
    before = os.stat(paths[0])
    data = bytearray(paths[0].read_bytes())
    data[-1] ^= 0xFF
    paths[0].write_bytes(bytes(data))
    os.utime(paths[0], ns=(before.st_atime_ns, before.st_mtime_ns))
    changed, hashed = plan()
    assert hashed == 1 and changed[str(paths[0])] == file_digest(paths[0]) != first[str(paths[0])]
    assert {k: v for k, v in changed.items() if k != str(paths[0])} == {
        k: v for k, v in first.items() if k != str(paths[0])
    }


def test_a_changed_file_is_scored_again(tiny_critic, synth_clips, tmp_path):
    """A clip replaced under the same path gets a new digest, hence a new key: scored again, its row replaced in
    scores.csv; an unchanged rerun scores nothing and writes the same scores.csv."""
    import shutil

    real = _clips(synth_clips)
    clip = tmp_path / "clip.mp4"
    shutil.copyfile(real[0], clip)
    out = tmp_path / "out"
    first = score_videos(_cfg(tiny_critic, [clip], out), progress=False)
    assert first.n_scored_now == 1
    scores = (out / "scores.csv").read_bytes()
    again = score_videos(_cfg(tiny_critic, [clip], out), progress=False)
    assert (again.n_scored_now, again.n_cached) == (0, 1) and (out / "scores.csv").read_bytes() == scores
    shutil.copyfile(real[1], clip)  # new content, same path
    changed = score_videos(_cfg(tiny_critic, [clip], out), progress=False)
    assert (changed.n_scored_now, changed.n_cached) == (1, 0)
    from recipe_lib.video import file_digest

    assert changed.rows[0]["video_sha256"] == file_digest(real[1]) != first.rows[0]["video_sha256"]
    assert (out / "scores.csv").read_text().count("\n") == 2  # the header and the clip, scored anew
