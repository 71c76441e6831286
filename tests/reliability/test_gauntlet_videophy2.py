"""``plausibility prepare videophy2`` under faults and bad inputs: a download killed mid-file then resumed, bad labels,
duplicates, refused URL schemes, the size cap, empty tables and a write that outgrows the file-size limit.

Clips are served by a real HTTP server on 127.0.0.1 (a thread of this process)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
from gauntlet import (
    ClipServer,
    error_lines,
    kill_tree,
    sha256,
    start_cli,
    wait_until,
    write_video,
)
from PIL import Image

from recipe_lib.data.download import DownloadCache
from support import REPO, run_cli


@pytest.fixture(scope="module")
def clips(synth_clips, tmp_path_factory) -> dict[str, Path]:
    """Four small synthetic clips plus one larger real mp4 (noise, ~120 KB: more than the 64 KB a download writes at
    a time, so a partial file has bytes in it) that the server sends slowly."""
    found = sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[:4]
    out = {p.name: p for p in found}
    noise = np.random.default_rng(0).integers(0, 255, (30, 64, 64, 3), dtype=np.uint8)
    big = write_video(tmp_path_factory.mktemp("noise") / "noise_clip.mp4", noise)
    out[big.name] = big
    return out


@pytest.fixture(scope="module")
def server(clips):  # noqa: ANN201
    with ClipServer() as s:
        for name, path in clips.items():
            s.files[name] = path.read_bytes()
        yield s


def _table(path: Path, rows: list[tuple[object, object]], caption: str = "") -> Path:
    frame = pd.DataFrame({"video_url": [u for u, _ in rows], "pc": [p for _, p in rows]})
    if caption:
        frame["caption"] = caption
    frame.to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_download_killed_mid_file_resumes_to_the_same_dataset(server, clips, tmp_path):
    names = list(clips)
    slow = "noise_clip.mp4"
    urls = [f"{server.url}/files/{n}" for n in names if n != slow] + [f"{server.url}/slow/{slow}"]
    table = _table(tmp_path / "remote.csv", [(u, 1 + i % 5) for i, u in enumerate(urls)])
    cache, out = tmp_path / "cache", tmp_path / "prepared"
    base = ["prepare", "videophy2", "--source", str(table), "--download", "--workers", "1", "--retries", "0"]
    args = [*base, "--cache-dir", str(cache)]

    proc = start_cli(*args, "--out", str(out))
    target = DownloadCache(cache).path_for(urls[-1])
    parts = f"files/{target.name}.*.part"  # the slow clip's bytes so far (the pid is part of the name)
    wait_until(proc, lambda: any(p.stat().st_size > 0 for p in cache.glob(parts)), timeout=60)
    kill_tree(proc)
    assert not out.exists() and not list(tmp_path.glob(".prepared.tmp-*")), "no output folder from a killed run"
    assert not target.exists(), "a killed download never leaves a complete-looking file"
    index = DownloadCache(cache).index()
    assert set(urls[:-1]) <= set(index) and urls[-1] not in index

    hits = dict(server.hits)
    done = run_cli(*args, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert f"kept {len(urls)} of {len(urls)} rows" in done.stdout
    assert f"downloads: 1 fetched, {len(urls) - 1} from cache, 0 failed" in done.stdout
    assert all(server.hits[u.removeprefix(server.url)] == hits.get(u.removeprefix(server.url)) for u in urls[:-1])
    assert server.hits[f"/slow/{slow}"] == hits[f"/slow/{slow}"] + 1
    assert not list(cache.glob("files/*.part")), "the killed run's partial file is removed"

    whole = tmp_path / "uninterrupted"
    ref = run_cli(*base, "--cache-dir", str(tmp_path / "cache2"), "--out", str(whole))
    assert ref.returncode == 0, ref.stderr
    got, want = datasets.load_from_disk(str(out)), datasets.load_from_disk(str(whole))
    assert got.column_names == want.column_names and got["pc"] == want["pc"]
    assert got["source_url"] == want["source_url"] == urls
    assert [sha256(Path(p)) for p in got["video_url"]] == [sha256(Path(p)) for p in want["video_url"]]
    assert [sha256(Path(p)) for p in got["video_url"]] == [sha256(clips[u.rsplit("/", 1)[1]]) for u in urls]


def test_bad_labels_duplicates_refused_schemes_and_the_size_cap_are_counted(server, clips, tmp_path):
    """Each bad row is dropped, counted and listed with its reason; the good rows are kept."""
    names = list(clips)
    local = str(clips[names[0]])
    png = tmp_path / "still.mp4"
    Image.new("RGB", (64, 48), (10, 200, 10)).save(png, format="PNG")
    rows = [
        (local, 3),
        (str(clips[names[1]]), 7),
        (str(clips[names[2]]), None),
        (str(clips[names[3]]), "high"),
        (str(clips[names[1]]), 2.5),
        (str(clips[names[2]]), float("nan")),
        (local, 4),
        ("file:///etc/passwd", 3),
        ("ftp://example.com/clip.mp4", 3),
        ("data:video/mp4;base64,AAAAIGZ0eXBpc29t", 3),
        (f"{server.url}/big/huge.mp4", 3),
        (f"{server.url}/stream-big/endless.mp4", 3),
        (f"{server.url}/files/{names[3]}", 5),
        (str(png), 4),
    ]
    table = _table(tmp_path / "labels.csv", rows)
    out = tmp_path / "prepared"
    r = run_cli(
        "prepare", "videophy2", "--source", str(table), "--out", str(out), "--download", "--max-mb", "0.05",
        "--retries", "0", "--timeout", "5", "--cache-dir", str(tmp_path / "cache"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    cap = int(0.05 * 1024 * 1024)
    expected = [
        f"{table}: kept 2 of {len(rows)} rows -> {out}",
        "dropped 12 row(s): 3 refused_url, 2 label_out_of_range, 2 missing_label, 2 download_failed, "
        "1 label_not_a_number, 1 duplicate, 1 unreadable_video",
        "  row 1: label_out_of_range - pc '7' is not a whole score 1-5",
        "  row 2: missing_label - pc is empty",
        "  row 3: label_not_a_number - pc 'high' is not a number",
        "  row 4: label_out_of_range - pc '2.5' is not a whole score 1-5",
        "  row 5: missing_label - pc is empty",
        "  row 6: duplicate - same video_url as row 0 with a different label (3 there, 4 here); the first is kept",
        "  row 7: refused_url - 'file://' URLs are not fetched (http/https only)",
        "  row 8: refused_url - 'ftp://' URLs are not fetched (http/https only)",
        "  row 9: refused_url - 'data:' URLs are not fetched (http/https only)",
        f"  row 10: download_failed - file is 50000000 bytes, over the size cap of {cap} bytes",
        f"  row 11: download_failed - body grew past the size cap of {cap} bytes; stopped",
        f"  row 13: unreadable_video - not a video: {png} is a PNG image",
    ]
    lines = r.stdout.splitlines()
    for line in expected:
        assert line in lines, f"{line!r} not in\n{r.stdout}"
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["rows_kept"] == 2 and report["rows_dropped"] == 12
    kept = datasets.load_from_disk(str(out))
    assert kept["source_row"] == [0, 12] and kept["pc"] == [3, 5]
    assert not any("passwd" in u for u in kept["video_url"])
    assert not list((tmp_path / "cache" / "files").glob("*.part")), "nothing partial is left in the cache"


@pytest.mark.parametrize("kind", ["empty_file", "header_only", "no_label_column"])
def test_empty_or_unlabelled_table_is_a_one_line_error(kind, clips, tmp_path):
    path = tmp_path / "t.csv"
    if kind == "empty_file":
        path.write_bytes(b"")
        want = (f"table {path} is an empty file (0 bytes)", "export it again: a header row, then one row per clip")
    elif kind == "header_only":
        path.write_text("video_url,pc\n")
        want = (f"{path} has no rows", None)
    else:
        pd.DataFrame({"video_url": [str(next(iter(clips.values())))], "score": [3]}).to_csv(path, index=False)
        want = (f"{path} has no 'pc' column (required)", "columns found: video_url, score; map one with --rename "
                "SOURCE=pc")  # fmt: skip
    r = run_cli("prepare", "videophy2", "--source", str(path), "--out", str(tmp_path / "out"))
    assert error_lines(r) == want
    assert not (tmp_path / "out").exists()


def _fsize_limit(limit: int):  # noqa: ANN202
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_write_past_the_file_size_limit_keeps_the_previous_output(clips, tmp_path):
    """A real RLIMIT_FSIZE (EFBIG, as a full disk would refuse): one-line error naming the output folder; the folder
    still holds the previous complete dataset; a rerun with room writes the new one."""
    paths = [str(p) for p in clips.values()]
    first = _table(tmp_path / "first.csv", [(p, 3) for p in paths[:2]])
    caption = "A ball rolls off the table and falls to the floor, bouncing twice. " * 20  # ~1.4 KB a row
    second = _table(tmp_path / "second.csv", [(p, 1 + i) for i, p in enumerate(paths)], caption)
    out = tmp_path / "prepared"
    assert run_cli("prepare", "videophy2", "--source", str(first), "--out", str(out)).returncode == 0
    args = [sys.executable, "-m", "recipe_lib.cli", "prepare", "videophy2", "--source", str(second), "--out", str(out)]
    r = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120, preexec_fn=_fsize_limit(2048))
    assert error_lines(r) == (
        f"file too large (the size limit for files was reached): {out}",
        "raise the file size limit (ulimit -f) or choose another output folder, then rerun",
    )
    previous = datasets.load_from_disk(str(out))
    assert previous["video_url"] == paths[:2], "the earlier output is untouched"
    assert json.loads((out / "prepare_report.json").read_text())["rows_kept"] == 2
    assert not list(tmp_path.glob(".prepared.*")), "no temporary folder is left behind"
    r = run_cli("prepare", "videophy2", "--source", str(second), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert datasets.load_from_disk(str(out))["video_url"] == paths
