"""Synthetic known-truth clips: real rendering, real H.264 files decoded with PyAV, a real dataset on disk."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from recipe_lib.data import synthetic as S
from recipe_lib.errors import DataError, RecipeError
from support import REPO

CONTRAST = S.SynthConfig(style="contrast")
PAIRS = [(scene, v) for scene in S.SCENES for v in ("none", *S.violations_for(scene))]

# Words that would give a violation away if they appeared in a caption.
LEAK_WORDS: dict[str, tuple[str, ...]] = {
    "hover": ("hover", "float", "mid-air", "midair", "suspend", "freez", "motionless", "in the air"),
    "upward_acceleration": ("upward", "rises", "rising", "falls up", "levitat", "anti-gravity", "antigravity"),
    "size_change": ("grow", "shrink", "expand", "swell", "inflat", "larger", "smaller", "bigger", "size"),
    "energy_gain": ("energy", "higher", "faster", "speeds up", "speed up", "gains", "accelerat"),
    "no_momentum_transfer": ("through", "stays put", "ghost", "unaffected", "without moving"),
    "sudden_stop": ("sudden", "abrupt", "halt", "stops", "instantly"),
    "effect_before_cause": ("before", "early", "prematur", "on its own", "by itself", "in advance"),
    "penetration": ("sink", "sank", "through", "penetrat", "embed", "into the floor", "into the ground", "into the"),
    "vanish": ("vanish", "disappear", "invisible", "gone", "fade"),
    "teleport": ("teleport", "jump", "reappear", "warp", "blink"),
    "any": ("violat", "impossible", "unrealistic", "implausible", "glitch", "defy", "defies", "anomal", "physics"),
}


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def render_decoded(tmp_path: Path, scene: str, violation: str, seed: int, cfg: S.SynthConfig = CONTRAST):
    frames, record = S.render_clip(scene, violation, np.random.default_rng(seed), cfg)
    path = S.write_clip(frames, tmp_path / f"{scene}_{violation}_{seed}.mp4", cfg.fps)
    return decode(path), record


def object_mask(frame: np.ndarray) -> np.ndarray:
    """White objects of the contrast style (the floor and walls are mid grey, the background black)."""
    return frame.mean(axis=-1) > 190


def floor_top(frame: np.ndarray) -> int:
    """First row that is floor all the way across (grey)."""
    grey = (frame.mean(axis=-1) > 100) & (frame.mean(axis=-1) < 160)
    rows = np.flatnonzero(grey.mean(axis=1) > 0.6)
    return int(rows[0])


def centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(ys.mean()), float(xs.mean())


def column_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Runs of columns holding object pixels: one run per separate object on the floor."""
    cols = mask.any(axis=0).astype(int)
    edges = np.diff(np.concatenate([[0], cols, [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> S.SynthResult:
    out = tmp_path_factory.mktemp("synthetic")
    return S.generate_clips(S.SynthConfig(n=24, out_dir=out, seed=5, style="contrast", workers=2))


def read_manifest(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_files_for_any_worker_count(small_set, tmp_path):
    again = S.generate_clips(S.SynthConfig(n=24, out_dir=tmp_path / "again", seed=5, style="contrast", workers=1))
    first = sorted((small_set.out_dir / "videos").glob("*.mp4"))
    second = sorted((again.out_dir / "videos").glob("*.mp4"))
    assert [p.name for p in first] == [p.name for p in second]
    assert len(first) == 24
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), a.name
    rows_a, rows_b = read_manifest(small_set.manifest_csv), read_manifest(again.manifest_csv)
    for ra, rb in zip(rows_a, rows_b):
        assert Path(ra.pop("video_url")).name == Path(rb.pop("video_url")).name
        assert ra == rb


def test_different_seeds_differ(small_set, tmp_path):
    other = S.generate_clips(S.SynthConfig(n=24, out_dir=tmp_path / "other", seed=6, style="contrast", workers=1))
    names_a = sorted(p.name for p in (small_set.out_dir / "videos").glob("*.mp4"))
    names_b = sorted(p.name for p in (other.out_dir / "videos").glob("*.mp4"))
    assert names_a != names_b  # a different shuffle of scenes and violations
    # The same scene and violation with a different clip stream renders different pixels.
    a, _ = S.render_clip("bounce", "none", S.clip_rng(5, 0), S.SynthConfig())
    b, _ = S.render_clip("bounce", "none", S.clip_rng(6, 0), S.SynthConfig())
    assert not np.array_equal(a, b)
    c, _ = S.render_clip("bounce", "none", S.clip_rng(5, 0), S.SynthConfig())
    assert np.array_equal(a, c)


# --------------------------------------------------------------------------------------------------------------------
# Every scene and violation
# --------------------------------------------------------------------------------------------------------------------


def test_violation_table_is_consistent():
    assert set(S.SCENES) >= {"free_fall", "projectile", "bounce", "slide_friction", "collision"}
    for name, spec in S.VIOLATIONS.items():
        assert spec.name == name
        assert spec.category in S.CATEGORIES
        assert spec.severity in (1, 2, 3)
        assert spec.scenes and set(spec.scenes) <= set(S.SCENES)
    assert {spec.category for spec in S.VIOLATIONS.values()} == set(S.CATEGORIES)
    assert {spec.severity for spec in S.VIOLATIONS.values()} == {1, 2, 3}
    with pytest.raises(RecipeError, match="does not apply"):
        S.render_clip("free_fall", "effect_before_cause", np.random.default_rng(0), CONTRAST)


@pytest.mark.parametrize("style", ["varied", "contrast"])
def test_every_scene_and_violation_renders_and_decodes(style, tmp_path):
    cfg = S.SynthConfig(style=style, width=64, height=48, frames=10, fps=5)
    for scene, violation in PAIRS:
        decoded, record = render_decoded(tmp_path, scene, violation, 11, cfg)
        assert decoded.shape == (10, 48, 64, 3), (scene, violation)
        assert record["scene"] == scene and record["violation"] == violation
        assert record["category"] == f"synthetic/{scene}"
        assert record["model_name"] == "synthetic" and record["sa"] == 5
        if violation == "none":
            assert record["onset_frame"] == -1 and record["pc"] == 5 and record["violation_category"] == "none"
            assert record["physics_rules_unfollowed"] == "" and record["human_violated_rules"] == ""
        else:
            assert 1 <= record["onset_frame"] <= 10 - S.MIN_VISIBLE_FRAMES
            assert 1 <= record["pc"] <= 4
            assert record["violation_category"] == S.VIOLATIONS[violation].category
            assert record["physics_rules_unfollowed"] and record["human_violated_rules"]
            assert record["physics_rules_unfollowed"] not in record["physics_rules_followed"].split("\n")


def test_violation_clips_match_their_plausible_twin_until_onset():
    """A violation clip and its plausible twin (same stream) share the caption; when they also drew the same scene,
    their frames agree before the onset and differ at it."""
    compared = total = 0
    for scene, violation in PAIRS:
        if violation == "none":
            continue
        for seed in (0, 1):
            total += 1
            frames, record = S.render_clip(scene, violation, np.random.default_rng(seed), CONTRAST)
            plain, twin = S.render_clip(scene, "none", np.random.default_rng(seed), CONTRAST)
            assert record["caption"] == twin["caption"]
            assert record["upsampled_caption"] == twin["upsampled_caption"]
            if not np.array_equal(frames[0], plain[0]):
                continue  # the violation needed another draw of the scene
            compared += 1
            onset = record["onset_frame"]
            assert np.array_equal(frames[:onset], plain[:onset]), (scene, violation, seed)
            assert not np.array_equal(frames[onset:], plain[onset:]), (scene, violation, seed)
    assert compared >= 0.7 * total


def test_captions_never_reveal_the_violation():
    patterns = {
        name: re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + ")", re.IGNORECASE)
        for name, words in LEAK_WORDS.items()
    }
    combined = re.compile("|".join(p.pattern for p in patterns.values()), re.IGNORECASE)
    for style in ("varied", "contrast"):
        cfg = S.SynthConfig(style=style)
        for scene, violation in PAIRS:
            for seed in range(6):
                _, record = S.render_clip(scene, violation, np.random.default_rng(seed), cfg)
                for column in ("caption", "upsampled_caption", "action", "category"):
                    text = record[column]
                    hit = combined.search(text)
                    assert hit is None, f"{scene}/{violation}: {column} {text!r} contains {hit.group(0)!r}"


# --------------------------------------------------------------------------------------------------------------------
# pc rule
# --------------------------------------------------------------------------------------------------------------------


def test_pc_rule():
    assert S.pc_score("none", None, 16) == 5
    # severity 3 (vanish): early 1, late 2; severity 2 (penetration): 2 / 3; severity 1 (size_change): 3 / 4
    assert [S.pc_score("vanish", k, 16) for k in (2, 8, 9)] == [1, 1, 2]
    assert [S.pc_score("penetration", k, 16) for k in (2, 9)] == [2, 3]
    assert [S.pc_score("size_change", k, 16) for k in (2, 9)] == [3, 4]
    assert S.is_hard("size_change", 2, 16) and S.is_hard("vanish", 12, 16) and not S.is_hard("vanish", 3, 16)
    assert not S.is_hard("none", None, 16)
    with pytest.raises(RecipeError):
        S.pc_score("vanish", None, 16)


def test_records_follow_the_pc_rule(small_set):
    rows = read_manifest(small_set.manifest_csv)
    for row in rows:
        onset, pc = int(row["onset_frame"]), int(row["pc"])
        assert pc == S.pc_score(row["violation"], None if onset < 0 else onset, 16)
        assert int(row["joint"]) == int(int(row["sa"]) >= 4 and pc >= 4)
        assert (row["is_hard"] == "True") == S.is_hard(row["violation"], onset, 16)
    assert sum(r["violation"] == "none" for r in rows) == 12  # plausible_fraction 0.5


# --------------------------------------------------------------------------------------------------------------------
# Dataset, manifest, summary
# --------------------------------------------------------------------------------------------------------------------


def test_dataset_manifest_and_summary_agree(small_set):
    import datasets

    ds = datasets.load_from_disk(str(small_set.dataset_dir))
    assert ds.column_names == list(S.RECORD_COLUMNS)
    assert len(ds) == small_set.n_clips == 24
    rows = read_manifest(small_set.manifest_csv)
    assert len(rows) == len(ds)
    for record, row in zip(ds, rows):
        assert {k: str(v) for k, v in record.items()} == row
        path = Path(record["video_url"])
        assert path.is_absolute() and path.is_file()
        assert path.name == f"s{rows.index(row):04d}_{record['scene']}_{record['violation']}.mp4"
        assert record["seed"] == 5
    summary = json.loads((small_set.out_dir / "summary.json").read_text())
    assert summary["n_clips"] == 24 and summary["codec"] == small_set.codec
    assert sum(summary["counts_by_violation"].values()) == 24
    assert {int(k): v for k, v in summary["counts_by_pc"].items()} == small_set.counts_by_pc
    loaded = S.load_synthetic(small_set.out_dir)
    assert loaded["video_url"] == ds["video_url"]


def test_load_synthetic_after_moving_the_folder(small_set, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(small_set.out_dir, moved)
    ds = S.load_synthetic(moved)
    assert all(Path(url).parent == moved / "videos" for url in ds["video_url"])
    assert all(Path(url).is_file() for url in ds["video_url"])
    with pytest.raises(DataError, match="no synthetic dataset"):
        S.load_synthetic(tmp_path / "nowhere")


def test_rerun_with_fewer_clips_removes_stale_videos(tmp_path):
    cfg = S.SynthConfig(n=6, out_dir=tmp_path, seed=1, workers=1, scenes=["slide_friction"])
    S.generate_clips(cfg)
    cfg.n = 3
    result = S.generate_clips(cfg)
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == result.n_clips == 3
    assert not [p for p in (tmp_path / "videos").iterdir() if p.suffix != ".mp4"]


# --------------------------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n": 0}, "n must be"),
        ({"n": "10"}, "n must be an integer"),
        ({"width": 33}, "even"),
        ({"height": 30}, "height must be"),
        ({"frames": 4}, "frames must be"),
        ({"fps": 0}, "fps must be"),
        ({"seed": -1}, "seed must be"),
        ({"workers": -2}, "workers must be"),
        ({"plausible_fraction": 1.5}, "plausible_fraction"),
        ({"style": "neon"}, "unknown style"),
        ({"scenes": ["bounc"]}, "valid scenes: free_fall"),
        ({"scenes": []}, "empty"),
        ({"scenes": "bounce"}, "list of names"),
        ({"violations": ["warp"]}, "valid violations: hover"),
        ({"scenes": ["free_fall"], "violations": ["effect_before_cause"]}, "applies to"),
    ],
)
def test_bad_config_gives_recipe_error(changes, message, tmp_path):
    cfg = S.SynthConfig(out_dir=tmp_path, **changes)
    with pytest.raises(RecipeError, match=message):
        S.generate_clips(cfg)


def test_only_plausible_clips_need_no_violation(tmp_path):
    cfg = S.SynthConfig(n=2, out_dir=tmp_path, scenes=["free_fall"], violations=["effect_before_cause"])
    cfg.plausible_fraction = 1.0
    cfg.workers = 1
    assert S.generate_clips(cfg).counts_by_violation == {"none": 2}


# --------------------------------------------------------------------------------------------------------------------
# write_clip
# --------------------------------------------------------------------------------------------------------------------


def test_write_clip_odd_sizes_and_single_frames(tmp_path):
    rng = np.random.default_rng(0)
    for t, h, w in ((1, 29, 37), (3, 32, 32), (2, 7, 5)):
        frames = np.zeros((t, h, w, 3), np.uint8)
        frames[..., 0] = 200
        frames[:, : h // 2, :, 2] = rng.integers(0, 50)
        path = S.write_clip(frames, tmp_path / f"c_{t}_{h}_{w}.mp4", fps=12)
        decoded = decode(path)
        assert decoded.shape == (t, h, w, 3)
        assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 6
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"c_{t}_{h}_{w}.mp4" for t, h, w in ((1, 29, 37), (3, 32, 32), (2, 7, 5))
    )


@pytest.mark.parametrize(
    ("frames", "fps", "message"),
    [
        (np.zeros((2, 16, 16, 3), np.float32), 8, "uint8"),
        (np.zeros((16, 16, 3), np.uint8), 8, "shape"),
        (np.zeros((0, 16, 16, 3), np.uint8), 8, "at least one frame"),
        (np.zeros((2, 16, 16, 3), np.uint8), 0, "fps"),
        (np.zeros((2, 1, 16, 3), np.uint8), 8, "too small"),
    ],
)
def test_write_clip_rejects_bad_input(frames, fps, message, tmp_path):
    with pytest.raises(RecipeError, match=message):
        S.write_clip(frames, tmp_path / "bad.mp4", fps=fps)
    assert not list(tmp_path.iterdir())


def test_encoder_is_h264():
    assert S.h264_encoder() in ("libx264", "h264", "libopenh264")


# --------------------------------------------------------------------------------------------------------------------
# Violations are visible in the decoded pixels
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scene", ["free_fall", "projectile", "bounce", "slide_friction"])
def test_penetration_goes_below_the_floor_line(scene, tmp_path):
    for seed in (0, 1, 2):
        frames, record = render_decoded(tmp_path, scene, "penetration", seed)
        onset, line = record["onset_frame"], floor_top(frames[0])
        below = [int(object_mask(f)[line + 1 :].sum()) for f in frames]
        assert max(below[:onset]) == 0, (seed, below)
        assert below[-1] >= 10, (seed, below)


@pytest.mark.parametrize("scene", ["free_fall", "projectile", "bounce", "slide_friction", "wall_rebound"])
def test_vanish_removes_the_object(scene, tmp_path):
    frames, record = render_decoded(tmp_path, scene, "vanish", 3)
    counts = [int(object_mask(f).sum()) for f in frames]
    onset = record["onset_frame"]
    assert min(counts[:onset]) > 10
    assert max(counts[onset:]) == 0


@pytest.mark.parametrize("scene", ["free_fall", "projectile", "bounce"])
def test_hover_stops_vertical_motion(scene, tmp_path):
    frames, record = render_decoded(tmp_path, scene, "hover", 4)
    onset = record["onset_frame"]
    ys = [centroid(object_mask(f))[0] for f in frames]
    assert abs(ys[onset - 1] - ys[0]) > 1.0  # it was falling or flying
    assert max(ys[onset - 1 :]) - min(ys[onset - 1 :]) < 0.5  # then stays at one height


@pytest.mark.parametrize("scene", ["free_fall", "bounce", "slide_friction", "wall_rebound"])
def test_teleport_jumps(scene, tmp_path):
    frames, record = render_decoded(tmp_path, scene, "teleport", 5)
    onset, width = record["onset_frame"], frames.shape[2]
    xs = [centroid(object_mask(f))[1] for f in frames]
    assert abs(xs[onset] - xs[onset - 1]) > 0.2 * width
    assert all(abs(b - a) < 0.15 * width for a, b in zip(xs[: onset - 1], xs[1:onset]))


@pytest.mark.parametrize("scene", ["free_fall", "bounce", "slide_friction"])
def test_size_change_changes_the_area(scene, tmp_path):
    frames, record = render_decoded(tmp_path, scene, "size_change", 6)
    onset = record["onset_frame"]
    areas = [int(object_mask(f).sum()) for f in frames]
    ratio = areas[-1] / areas[onset - 1]
    assert ratio > 1.5 or ratio < 0.65, areas


@pytest.mark.parametrize("scene", ["free_fall", "projectile", "bounce", "slide_friction"])
def test_upward_acceleration_moves_up(scene, tmp_path):
    frames, record = render_decoded(tmp_path, scene, "upward_acceleration", 7)
    onset = record["onset_frame"]
    tops = []
    for f in frames:
        rows = np.flatnonzero(object_mask(f).any(axis=1))
        tops.append(int(rows[0]) if rows.size else -1)  # -1: it left through the top
    assert min(tops[onset:]) < tops[onset - 1] - 2, tops


def test_energy_gain_bounces_higher_than_the_drop(tmp_path):
    for seed in (0, 1, 2):
        frames, record = render_decoded(tmp_path, "bounce", "energy_gain", seed)
        tops = [int(np.flatnonzero(object_mask(f).any(axis=1))[0]) for f in frames if object_mask(f).any()]
        assert min(tops[record["onset_frame"] :]) < tops[0] - 2, (seed, tops)


def test_sudden_stop_of_a_sliding_box(tmp_path):
    frames, record = render_decoded(tmp_path, "slide_friction", "sudden_stop", 8)
    onset = record["onset_frame"]
    xs = [centroid(object_mask(f))[1] for f in frames]
    assert xs[onset - 1] - xs[onset - 2] > 1.0  # moving fast just before
    assert max(xs[onset - 1 :]) - min(xs[onset - 1 :]) < 0.5


def test_effect_before_cause_struck_ball_moves_before_contact(tmp_path):
    for seed in (0, 1, 2):
        frames, record = render_decoded(tmp_path, "collision", "effect_before_cause", seed)
        onset = record["onset_frame"]
        masks = [object_mask(f) for f in frames]
        start, now = column_runs(masks[0]), column_runs(masks[onset])
        assert len(start) == 2 and len(now) == 2, (seed, now)
        assert now[1][0] - now[0][1] >= 2  # a clear gap: the balls have not touched
        later = min(onset + 1, len(frames) - 1)
        runs = column_runs(masks[later])
        assert len(runs) == 2 and runs[1][0] - runs[0][1] >= 1, (seed, runs)
        struck_then = start[1][0] + centroid(masks[0][:, start[1][0] :])[1]
        struck_later = runs[1][0] + centroid(masks[later][:, runs[1][0] :])[1]
        assert struck_later - struck_then > 1.0  # yet the struck ball is already moving


def test_no_momentum_transfer_leaves_the_struck_ball_in_place(tmp_path):
    for seed in (0, 1):
        frames, _ = render_decoded(tmp_path, "collision", "no_momentum_transfer", seed)
        masks = [object_mask(f) for f in frames]
        start = column_runs(masks[0])
        struck = masks[0].copy()
        struck[:, : start[1][0]] = False
        assert all(m[struck].mean() > 0.97 for m in masks)  # the struck ball never moves
        assert any(len(column_runs(m)) == 1 for m in masks)  # while the striker passes over it


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------


def test_cli_synth(tmp_path):
    out = tmp_path / "cli"
    done = subprocess.run(
        [sys.executable, "-m", "recipe_lib.cli", "synth", "--n", "4", "--out", str(out), "--workers", "1",
         "--scenes", "bounce,collision", "--style", "contrast", "--frames", "8", "--width", "64", "--height", "64"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "wrote 4 clips" in done.stdout and str(out / "manifest.csv") in done.stdout
    assert len(list((out / "videos").glob("*.mp4"))) == 4
    bad = subprocess.run(
        [sys.executable, "-m", "recipe_lib.cli", "synth", "--n", "2", "--out", str(out), "--scenes", "nope"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "error: unknown scene 'nope'" in bad.stderr and "Traceback" not in bad.stderr
