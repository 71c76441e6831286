"""``plausibility score`` under faults and bad inputs: SIGKILL at three points then resume, every kind of bad video,
a full disk, an unwritable output folder, bad tables and prompts, HTML injection into the report, checkpoint code.

Every check drives the real CLI in a subprocess with the real tiny Qwen2.5-VL on real mp4 files."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from gauntlet import (
    assert_complete_outputs,
    error_lines,
    jsonl_rows,
    kill_tree,
    make_bad_media,
    moving_square,
    remount,
    skip_lines,
    start_cli,
    tmpfs,
    wait_until,
    write_video,
)

from recipe_lib.inference.store import read_store
from support import REPO, run_cli, store_count


def clips_of(synth_clips) -> list[Path]:  # noqa: ANN001
    return sorted((synth_clips.out_dir / "videos").glob("*.mp4"))


# --------------------------------------------------------------------------------------------------------------------
# kill and resume


def _reference_rows(args: list[str], out: Path) -> dict[str, dict]:
    """The same command's settings, scored in this process without interruption (the parser and config builder the
    CLI uses)."""
    from recipe_lib.cli import build_parser
    from recipe_lib.commands.score import score_config
    from recipe_lib.inference.scoring import score_videos

    cfg = score_config(build_parser().parse_args([*args, "--out", str(out)]))
    return {r["key"]: r for r in score_videos(cfg, progress=False).rows}


@pytest.mark.slow
def test_kill_before_first_batch_mid_run_and_after_an_append_then_resume(tiny_critic, synth_clips, tmp_path):
    """SIGKILL the same scoring run three times (while the model loads, after 4 of 16 rows, right after the next row
    is appended), tear its last line as a kill inside write() would, then rerun: all 16 rows, none twice, none lost,
    the same scores as an uninterrupted run."""
    args = ["score", str(synth_clips.out_dir / "videos"), "--model", str(tiny_critic)]
    args += ["--batch-size", "1", "--workers", "1"]
    out = tmp_path / "out"
    results = out / "results.sqlite"
    n = len(clips_of(synth_clips))

    # 1. Before the first batch lands: the store is open (its lock exists), the model is loading.
    proc = start_cli(*args, "--out", str(out))
    wait_until(proc, lambda: (out / "results.sqlite.lock").exists())
    kill_tree(proc)
    assert store_count(results) == 0 and not (out / "summary.json").exists() and not (out / "scores.csv").exists()

    # 2. Mid-run: after at least 4 rows.
    proc = start_cli(*args, "--out", str(out))
    wait_until(proc, lambda: store_count(results) >= 4)
    kill_tree(proc)
    after_mid = read_store(results)
    assert 4 <= len(after_mid) < n and len({r["key"] for r in after_mid}) == len(after_mid)

    # 3. Right after a row is appended (fsynced): kill as soon as the file grows.
    count = store_count(results)
    proc = start_cli(*args, "--out", str(out))
    wait_until(proc, lambda: store_count(results) > count, poll=0.0005)
    kill_tree(proc)
    after_append = read_store(results)
    assert len(after_mid) < len(after_append) < n
    with results.with_name("results.sqlite-wal").open("ab") as fh:  # the torn frame a kill inside write() leaves
        fh.write(b"\x00\x00\x00\x07" + b"\x5a" * 1000)

    done = run_cli(*args, "--out", str(out))
    assert done.returncode == 0, done.stderr
    landed = len(after_append)
    assert f"scored {n} of {n} clips ({n - landed} now, {landed} cached)" in done.stdout
    final = read_store(results)  # the torn frame is dropped by SQLite's recovery
    keys = [r["key"] for r in final]
    assert len(keys) == len(set(keys)) == n
    by_key = {r["key"]: r for r in final}
    for row in after_append:  # nothing that landed before a kill was lost or rewritten
        assert by_key[row["key"]] == row
    assert json.loads((out / "summary.json").read_text())["scored"] == n
    assert_complete_outputs(out)

    reference = _reference_rows(args, tmp_path / "uninterrupted")
    assert set(reference) == set(by_key)
    for key, ref in reference.items():
        assert by_key[key]["score"] == ref["score"]
        assert by_key[key]["expected_score"] == pytest.approx(ref["expected_score"], abs=1e-4)


# --------------------------------------------------------------------------------------------------------------------
# bad videos and HTML injection, one run


XSS_NAME = "<img src=x onerror=alert(1)>.mp4"
QUOTE_NAME = "q\"u'o&te.mp4"
CAPTIONS = {XSS_NAME: '<script>alert("caption")</script>', QUOTE_NAME: "</td><b onmouseover=alert(2)>hover</b>"}
TITLE = "<script>alert('title')</script> scores"


@pytest.fixture(scope="module")
def checkpoint_with_code(tiny_critic, tmp_path_factory):  # noqa: ANN201
    """The tiny critic plus Python files of its own that its config.json maps to (``auto_map``); importing them writes
    a marker file. transformers caches such modules under ``HF_MODULES_CACHE`` (a temporary folder here)."""
    root = tmp_path_factory.mktemp("checkpoint")
    model, marker = root / "checkpoint_with_code", root / "checkpoint_code_ran"
    shutil.copytree(tiny_critic, model)
    (model / "configuration_marked.py").write_text(
        "from pathlib import Path\n\nfrom transformers import Qwen2_5_VLConfig\n\n"
        f"Path({str(marker)!r}).write_text('ran')\n\n\nclass MarkedConfig(Qwen2_5_VLConfig):\n    pass\n"
    )
    (model / "modeling_marked.py").write_text(
        "from transformers import Qwen2_5_VLForConditionalGeneration\n\n"
        "from .configuration_marked import MarkedConfig\n\n\n"
        "class MarkedModel(Qwen2_5_VLForConditionalGeneration):\n    config_class = MarkedConfig\n"
    )
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_marked.MarkedConfig",
        "AutoModelForImageTextToText": "modeling_marked.MarkedModel",
    }
    (model / "config.json").write_text(json.dumps(config, indent=2))
    return {"model": model, "marker": marker, "env": {"HF_MODULES_CACHE": str(root / "hf_modules")}}


@pytest.fixture(scope="module")
def gauntlet_run(checkpoint_with_code, synth_clips, tmp_path_factory):  # noqa: ANN201
    """One ``score`` run over every kind of bad video plus a labelled table whose captions and file names carry HTML,
    in generate mode so the report holds model output. The critic is the checkpoint that ships code of its own,
    scored without --trust-remote-code."""
    root = tmp_path_factory.mktemp("score_gauntlet")
    good = clips_of(synth_clips)
    bad = make_bad_media(root / "bad", good[0])
    table_dir = root / "labelled"
    table_dir.mkdir()
    shutil.copyfile(good[1], table_dir / XSS_NAME)
    shutil.copyfile(good[2], table_dir / QUOTE_NAME)
    import pandas as pd

    table = table_dir / "clips.csv"
    captions = [CAPTIONS[XSS_NAME], CAPTIONS[QUOTE_NAME], CAPTIONS[XSS_NAME]]
    # The table lists its first clip twice: the second row is a counted duplicate.
    pd.DataFrame({"video_url": [XSS_NAME, QUOTE_NAME, XSS_NAME], "pc": [2, 5, 2], "caption": captions}).to_csv(
        table, index=False
    )
    dup = root / "copy_of_first.mp4"
    shutil.copyfile(good[1], dup)
    again = good[3].parent / ".." / good[3].parent.name / good[3].name  # the same file, spelled differently
    out = root / "out"
    args = ["score", str(table), str(good[3]), *(str(p) for p in bad.values()), str(dup), str(good[3]), str(again)]
    args += ["--out", str(out), "--model", str(checkpoint_with_code["model"]), "--mode", "generate"]
    args += ["--max-new-tokens", "8", "--report-title", TITLE]
    result = run_cli(*args, env=checkpoint_with_code["env"])
    return {"result": result, "bad": bad, "out": out, "dup": dup, "again": again, "xss": table_dir / XSS_NAME}


def test_bad_videos_are_counted_skips_with_the_reason(gauntlet_run):
    r, bad = gauntlet_run["result"], gauntlet_run["bad"]
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    n_bad = len(bad) + 2  # the bad files, the table's repeated row, the copy of a clip under another name
    n_in = 3 + n_bad
    assert re.search(rf"scored 3 of {n_in} clips \(3 now, 0 cached\), \d+ unparsed, {n_bad} skipped", r.stdout)
    assert re.search(rf"at threshold 4: keep \d+, reject \d+, unparsed \d+, skipped {n_bad}", r.stdout)
    readable = "(hint: the file is truncated or not a video container (mp4/mkv/webm/mov))"
    expected = {
        "missing": "video not found: {p}",
        "empty": "video is an empty file (0 bytes): {p} (hint: re-export or re-download the clip)",
        "truncated_file": "not a readable video: {p} (Invalid data found when processing input) " + readable,
        "png": "not a video: {p} is a PNG image "
        "(hint: export the clip as a video (mp4/mkv/webm/mov); a single image cannot show motion)",
        "wav": "no video stream in {p} (hint: the file holds no video track (audio only?))",
        "text": "not a readable video: {p} (Invalid data found when processing input) " + readable,
        "one_frame": "video has a single frame (a still image): {p} "
        "(hint: nothing moves in it, so physical plausibility cannot be judged; export at least 2 frames)",
        "one_pixel": "frame size 1x1 is smaller than 14 pixels a side: {p} "
        "(hint: the clip holds too little picture to judge; check the export settings)",
        "huge": "frame size 10000x10000 is larger than 8192 pixels a side: {p} "
        "(hint: downscale the clip (e.g. to 1280 wide) before scoring; it was not decoded)",
    }
    reasons = skip_lines(r.stdout)
    for kind, template in expected.items():
        assert reasons[bad[kind].name] == template.format(p=bad[kind]), kind
    cut = re.escape(str(bad["truncated_stream"]))
    assert re.fullmatch(
        rf"video is truncated: its header lists 64 frames but only \d+ decode: {cut}"
        r" \(hint: re-export or re-download the clip\)",
        reasons[bad["truncated_stream"].name],
    )
    assert reasons[gauntlet_run["dup"].name] == "duplicate: same content as an earlier clip in this run"
    xss = gauntlet_run["xss"]
    assert f"  skipped {xss}: duplicate: same content as an earlier clip in this run" in r.stdout.splitlines()
    assert sum(1 for line in r.stdout.splitlines() if line.startswith("  skipped ")) == n_bad
    # One file given twice more on the command line (once spelled differently) is the same clip: scored once and
    # counted in summary.json, not listed as a skip.
    summary = json.loads((gauntlet_run["out"] / "summary.json").read_text())
    assert summary["repeated_paths"] == 2
    out = gauntlet_run["out"]
    assert len(jsonl_rows(out / "skipped.jsonl")) == n_bad
    assert json.loads((out / "summary.json").read_text())["skipped"] == n_bad
    assert len(read_store(out)) == 3


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.attrs: list[tuple[str, str, str | None]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attrs.extend((tag, k, v) for k, v in attrs)
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


def test_report_escapes_captions_file_names_titles_and_model_output(gauntlet_run):
    from markupsafe import escape

    assert gauntlet_run["result"].returncode == 0
    out = gauntlet_run["out"]
    page = (out / "report.html").read_text(encoding="utf-8")
    parser = _Tags()
    parser.feed(page)
    assert not [a for a in parser.attrs if a[1].startswith("on")], "an injected event handler reached the page"
    assert all(v.startswith("data:image/") for t, k, v in parser.attrs if t == "img" and k == "src")
    assert not any("alert(" in s for s in parser.scripts), "injected script text reached a <script> element"
    for text in [*CAPTIONS.values(), XSS_NAME, QUOTE_NAME, TITLE]:
        assert text not in page or text == escape(text)
        assert str(escape(text)) in page, text
    rows = read_store(out)
    assert all(r["raw_output"] is not None for r in rows)
    for row in rows:  # the critic's own words, whatever characters they hold
        if row["video"] != str(gauntlet_run["xss"]):  # see the next test
            assert str(escape(row["raw_output"])) in page


def test_report_keeps_the_score_of_a_clip_listed_twice(gauntlet_run):
    """The repeated row is skipped, but the clip itself was scored: the report must show its prediction."""
    from markupsafe import escape

    out = gauntlet_run["out"]
    page = (out / "report.html").read_text(encoding="utf-8")
    (row,) = [r for r in read_store(out) if r["video"] == str(gauntlet_run["xss"])]
    assert str(escape(row["raw_output"])) in page


# --------------------------------------------------------------------------------------------------------------------
# memory: long clips and huge frames

MEMORY_SCRIPT = """
import json, sys
from recipe_lib.profiles import get_profile
from recipe_lib.errors import VideoError
from recipe_lib.video import load_for_model

def status_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

def peak_growth_kb(call):
    # Reset the kernel's peak-RSS mark (VmHWM) so the peak covers this call only, then compare with the RSS before.
    # Where /proc/self/clear_refs cannot be written, a thread samples VmRSS every millisecond instead.
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        sampler = None
    except OSError:
        import threading, time
        peak, stop = [0], threading.Event()
        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], status_kb("VmRSS"))
                time.sleep(0.001)
        sampler = threading.Thread(target=sample)
    before = status_kb("VmRSS")
    if sampler:
        sampler.start()
    try:
        result = call()
    except VideoError as exc:
        result = exc.message
    if sampler:
        stop.set()
        sampler.join()
        return result, max(peak[0], status_kb("VmRSS")) - before
    return result, status_kb("VmHWM") - before

settings = get_profile("demo").video
load_for_model(sys.argv[1], settings)  # warm up: imports and decoder set-up
clip, grow = peak_growth_kb(lambda: load_for_model(sys.argv[2], settings))
out = {"frames_kept": int(clip.frames.shape[0]), "long_growth_kb": grow}
out["huge"], out["huge_growth_kb"] = peak_growth_kb(lambda: load_for_model(sys.argv[3], settings))
print(json.dumps(out))
"""


def test_long_clip_sampling_is_bounded_and_huge_frames_are_refused_unread(synth_clips, tmp_path):
    """A 2400-frame 320x240 clip (553 MB if every frame were decoded and kept) is sampled with a few MB of peak RSS
    growth; a 10000x10000 frame is refused from its header, before a byte of it is decoded. The peak is the kernel's
    VmHWM, reset just before each call (/proc/self/clear_refs)."""
    from gauntlet import make_huge_clip

    n, h, w = 2400, 240, 320
    long_clip = write_video(tmp_path / "long.mp4", moving_square(n, h, w), fps=30)
    huge = make_huge_clip(tmp_path / "huge.mp4")
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(clips_of(synth_clips)[0]), str(long_clip), str(huge)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    m = json.loads(done.stdout.strip().splitlines()[-1])
    all_frames_kb = n * h * w * 3 // 1024
    assert m["frames_kept"] == 8  # the demo profile's max_frames
    assert m["long_growth_kb"] < all_frames_kb / 10, m
    assert m["huge"] == f"frame size 10000x10000 is larger than 8192 pixels a side: {huge}"
    one_frame_kb = 10000 * 10000 * 3 // 2 // 1024  # a single decoded yuv420 frame of that size: 146 MB
    assert m["huge_growth_kb"] < one_frame_kb / 4, m


# --------------------------------------------------------------------------------------------------------------------
# bad tables and prompts: one-line errors before any model is loaded


def _bad_input(kind: str, root: Path, clip: Path) -> tuple[list[str], str, str | None]:
    """(extra score args, expected error, expected hint) for one kind of bad table or prompt."""
    import datasets
    import pandas as pd

    if kind == "empty_csv":
        path = root / "empty.csv"
        path.write_bytes(b"")
        hint = "export it again: a header row, then one row per clip"
        return [str(path)], f"table {path} is an empty file (0 bytes)", hint
    if kind == "header_only_csv":
        path = root / "header.csv"
        path.write_text("video_url,pc\n")
        return [str(path)], f"{path} has no rows", "a table of clips needs one row per clip with a video_url"
    if kind == "empty_dataset":
        path = root / "empty_ds"
        datasets.Dataset.from_dict({"video_url": [], "pc": []}).save_to_disk(str(path))
        return [str(path)], f"{path} has no rows", "a table of clips needs one row per clip with a video_url"
    if kind == "no_video_url":
        path = root / "paths.csv"
        pd.DataFrame({"path": [str(clip)], "pc": [3]}).to_csv(path, index=False)
        return [str(path)], f"{path}: row 0 has no 'video_url'", "every row needs a video path"
    if kind == "glob_matches_nothing":
        pattern = str(root / "renders" / "*.mp4")
        return [pattern], f"no files match {pattern}", "check the pattern and the folder it starts from"
    if kind == "prompt_not_a_mapping":
        path = root / "list.yaml"
        path.write_text("- system_prompt\n- user_prompt\n")
        return (
            [str(clip), "--prompt", str(path)],
            f"{path}: a prompt file must be a mapping with keys system_prompt, user_prompt",
            "got list; write 'system_prompt: |' and 'user_prompt: |' blocks",
        )
    if kind == "prompt_python_tag":
        marker = root / "prompt_payload_ran"
        path = root / "evil.yaml"
        path.write_text(f"system_prompt: !!python/object/apply:os.system ['touch {marker}']\nuser_prompt: hi\n")
        return (
            [str(clip), "--prompt", str(path)],
            f"{path}: not valid YAML (line 1, column 16: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object/apply:os.system')",
            "a prompt file is plain YAML text: 'system_prompt: |' and 'user_prompt: |' blocks, no !!tags",
        )
    raise AssertionError(kind)


BAD_INPUTS = [
    "empty_csv",
    "header_only_csv",
    "empty_dataset",
    "no_video_url",
    "glob_matches_nothing",
    "prompt_not_a_mapping",
    "prompt_python_tag",
]


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_table_or_prompt_is_a_one_line_error(kind, tiny_critic, synth_clips, tmp_path):
    args, message, hint = _bad_input(kind, tmp_path, clips_of(synth_clips)[0])
    r = run_cli("score", *args, "--out", str(tmp_path / "out"), "--model", str(tiny_critic))
    assert error_lines(r) == (message, hint)
    assert not (tmp_path / "prompt_payload_ran").exists(), "the YAML payload executed"
    assert not (tmp_path / "out" / "results.sqlite").exists()


def test_labels_out_of_range_in_a_scored_table(tiny_critic, synth_clips, tmp_path):
    """A table's labels that are not whole scores 1-5 (7, 'high', 2.5) are named with their row or clip."""
    import pandas as pd

    clips = clips_of(synth_clips)[:4]
    table = tmp_path / "labels.csv"
    pd.DataFrame({"video_url": [str(c) for c in clips], "pc": ["3", "7", "high", "2.5"]}).to_csv(table, index=False)
    r = run_cli("score", str(table), "--out", str(tmp_path / "out"), "--model", str(tiny_critic))
    assert "Traceback" not in r.stderr
    if r.returncode == 2:
        message, _ = error_lines(r)
        assert "'7'" in message and (str(table) in message or clips[1].name in message), message
    else:
        assert r.returncode == 0, r.stderr
        assert clips[1].name in r.stdout and "7" in r.stdout, r.stdout


# --------------------------------------------------------------------------------------------------------------------
# output folder: not writable, disk full


def test_output_path_under_a_regular_file(tiny_critic, synth_clips, tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file where a folder is expected")
    out = blocker / "scores"
    r = run_cli("score", str(clips_of(synth_clips)[0]), "--out", str(out), "--model", str(tiny_critic))
    assert error_lines(r) == (
        f"a part of the path is a file, not a folder: {out}",
        "check the path; choose a folder path for output",
    )


def test_read_only_output_folder(tiny_critic, synth_clips, tmp_path):
    """As a normal user a chmod 0o500 folder; as root (permissions are not enforced) a read-only tmpfs mount."""
    clip = str(clips_of(synth_clips)[0])
    folder = tmp_path / "locked"
    if os.geteuid() != 0:
        folder.mkdir()
        folder.chmod(0o500)
        try:
            r = run_cli("score", clip, "--out", str(folder), "--model", str(tiny_critic))
        finally:
            folder.chmod(0o700)
        assert error_lines(r) == (f"cannot write to {folder}", "choose a writable --out folder")
        return
    with tmpfs(folder, "64k", read_only=True):
        r = run_cli("score", clip, "--out", str(folder), "--model", str(tiny_critic))
        assert error_lines(r) == (f"cannot write to {folder}", "choose a writable --out folder")
        r = run_cli("score", clip, "--out", str(folder / "sub"), "--model", str(tiny_critic))
        assert error_lines(r) == (
            f"read-only file system: {folder / 'sub'}",
            "choose an output folder on a writable disk",
        )


def _fsize_limit(limit: int):  # noqa: ANN202
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_disk_full_mid_run_then_resume(tiny_critic, synth_clips, tmp_path):
    """results.sqlite outgrows a 160 KB tmpfs after a few rows: one-line error naming the file, the partial batch is cut
    off, every file left under its final name is whole; with room again the rerun finishes from the kept rows.
    Where tmpfs cannot be mounted, a real 64 KB file-size limit (RLIMIT_FSIZE, EFBIG) stands in for the full disk."""
    args = ["score", str(synth_clips.out_dir / "videos"), "--model", str(tiny_critic)]
    args += ["--batch-size", "1", "--workers", "1"]
    n = len(clips_of(synth_clips))
    disk = tmp_path / "disk"
    try:
        with tmpfs(disk, "160k"):
            out = disk / "out"
            r = run_cli(*args, "--out", str(out))
            message, hint = error_lines(r)
            assert message == f"no space left on the device: {out / 'results.sqlite'}"
            assert hint == "free some disk space or choose another output folder, then rerun"
            kept = read_store(out)
            assert 0 < len(kept) < n
            assert_complete_outputs(out)
            remount(disk, "16m")
            _finish(args, out, kept, n)
            return
    except pytest.skip.Exception:
        pass
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "recipe_lib.cli", *args, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_fsize_limit(65536),
    )
    message, hint = error_lines(r)
    assert message == f"file too large (the size limit for files was reached): {out / 'results.sqlite'}"
    kept = read_store(out)
    assert 0 < len(kept) < n
    assert_complete_outputs(out)
    _finish(args, out, kept, n)


def _finish(args: list[str], out: Path, kept: list[dict], n: int) -> None:
    done = run_cli(*args, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert f"scored {n} of {n} clips ({n - len(kept)} now, {len(kept)} cached)" in done.stdout
    rows = read_store(out)
    assert len({r["key"] for r in rows}) == len(rows) == n
    assert all(r in rows for r in kept)
    assert_complete_outputs(out)


# --------------------------------------------------------------------------------------------------------------------
# code shipped with a checkpoint


def test_checkpoint_code_runs_only_with_trust_remote_code(checkpoint_with_code, gauntlet_run, synth_clips, tmp_path):
    """A checkpoint whose config.json maps to its own Python files (auto_map): the gauntlet run scored with it without
    --trust-remote-code, and its code never ran (transformers' own Qwen2.5-VL classes loaded it); with the flag the
    code runs."""
    import inspect

    from recipe_lib.cli import build_parser
    from recipe_lib.commands.score import score_config
    from recipe_lib.inference.score_config import ScoreConfig
    from recipe_lib.models.loading import load_critic

    assert inspect.signature(load_critic).parameters["trust_remote_code"].default is False
    assert ScoreConfig(inputs=[], out_dir=tmp_path, model="m").trust_remote_code is False
    parse = build_parser().parse_args
    base = ["score", "x.mp4", "--out", str(tmp_path), "--model", str(checkpoint_with_code["model"])]
    assert score_config(parse(base)).trust_remote_code is False
    assert score_config(parse([*base, "--trust-remote-code"])).trust_remote_code is True

    model, marker, env = checkpoint_with_code["model"], checkpoint_with_code["marker"], checkpoint_with_code["env"]
    assert gauntlet_run["result"].returncode == 0 and "scored 3 of" in gauntlet_run["result"].stdout
    assert not marker.exists(), "the checkpoint's code ran although --trust-remote-code was not given"
    clip = str(clips_of(synth_clips)[0])
    r = run_cli("score", clip, "--out", str(tmp_path / "b"), "--model", str(model), "--trust-remote-code", env=env)
    assert r.returncode == 0, r.stderr
    assert marker.exists(), "with --trust-remote-code the checkpoint's own code is used"
