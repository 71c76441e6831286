"""``prepare videophy2`` on tables built from the real VideoPhy-2 clips in ../shared (skipped when absent).

The shared folder's ``output_pc.csv`` holds VideoPhy-2-AutoEval scores (not human labels); they stand in for ``pc`` here
only to give the rows realistic labels. Relative paths in it (``examples/<name>.mp4``) are resolved with --videos-dir.
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
import urllib.parse
from pathlib import Path

import datasets
import pandas as pd
import pytest

from recipe_lib.data.videophy2 import VideoPhy2Config, load_report, prepare_videophy2
from recipe_lib.errors import DataError
from support import SHARED_VIDEOS, run_cli


@pytest.fixture(scope="module")
def labelled_table(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """The shared example CSV as a VideoPhy-2 table plus one row for every kind of problem."""
    if not (SHARED_VIDEOS / "output_pc.csv").exists():
        pytest.skip(f"real VideoPhy-2 clips not present at {SHARED_VIDEOS} (a fresh clone lacks ../shared)")
    base = pd.read_csv(SHARED_VIDEOS / "output_pc.csv", index_col=0)
    rules = pd.read_csv(SHARED_VIDEOS / "rule.csv")
    good = pd.DataFrame(
        {
            "video_url": base["videopath"],
            "caption": base["caption"],
            "pc": base["score"].astype(int),
            "model_name": ["cosmos", "wan"] * 5,
            "is_hard": [True, False] * 5,
        }
    )
    more = pd.DataFrame({"video_url": rules["videopath"], "pc": [2, 3] * 5, "model_name": "hunyuan", "is_hard": False})
    bad = pd.DataFrame(
        [
            {"video_url": "examples/no_such_clip.mp4", "pc": 3},  # 20 video_not_found
            {"video_url": base["videopath"][0], "pc": 2},  # 21 duplicate with another label
            {"video_url": base["videopath"][1], "pc": 7},  # 22 out of range
            {"video_url": base["videopath"][2], "pc": None},  # 23 missing label
            {"video_url": base["videopath"][3], "pc": "high"},  # 24 not a number
            {"video_url": None, "pc": 4},  # 25 no video_url
            {"video_url": "https://storage.example.com/clips/remote.mp4", "pc": 4},  # 26 remote, offline
            {"video_url": "file:///etc/passwd", "pc": 4},  # 27 refused scheme
            {"video_url": "examples/not_a_video.mp4", "pc": 4},  # 28 unreadable
        ]
    )
    table = pd.concat([good, more, bad], ignore_index=True)
    folder = tmp_path_factory.mktemp("vp2_table")
    (folder / "examples").mkdir()
    (folder / "examples" / "not_a_video.mp4").write_bytes(b"this is text, not an mp4 container" * 10)
    path = folder / "videophy2_sample.csv"
    table.to_csv(path, index=False)
    return path, table


EXPECTED_DROPS = {
    20: "video_not_found",
    21: "duplicate",
    22: "label_out_of_range",
    23: "missing_label",
    24: "label_not_a_number",
    25: "missing_video_url",
    26: "remote_offline",
    27: "refused_url",
    28: "unreadable_video",
}


def test_cli_prepares_a_csv_with_an_account_of_every_dropped_row(labelled_table, tmp_path: Path) -> None:
    path, table = labelled_table
    out = tmp_path / "prepared"
    proc = run_cli("prepare", "videophy2", "--source", str(path), "--out", str(out), "--videos-dir", str(SHARED_VIDEOS))
    assert proc.returncode == 0, proc.stderr
    assert "kept 20 of 29 rows" in proc.stdout
    assert "row 22: label_out_of_range - pc '7' is not a whole score 1-5" in proc.stdout
    assert "row 21: duplicate - same video_url as row 0 with a different label (4 there, 2 here)" in proc.stdout

    report = load_report(out)
    assert report["rows_in_source"] == 29 and report["rows_kept"] == 20 and report["rows_dropped"] == 9
    assert {d["row"]: d["reason"] for d in report["dropped_rows"]} == EXPECTED_DROPS
    assert report["dropped_by_reason"] == {r: 1 for r in EXPECTED_DROPS.values()}
    assert "not a readable video" in next(d["detail"] for d in report["dropped_rows"] if d["row"] == 28)
    assert "upsampled_caption" in report["missing_optional_columns"]

    ds = datasets.load_from_disk(str(out))
    assert ds.num_rows == 20
    assert all(Path(u).is_absolute() and Path(u).is_file() for u in ds["video_url"])
    assert {Path(u).parent for u in ds["video_url"]} == {SHARED_VIDEOS.resolve()}
    assert ds["source_row"] == list(range(20))
    assert ds["source_url"][0] == table["video_url"][0]
    assert ds["pc"][:10] == table["pc"][:10].astype(int).tolist()
    assert set(ds.column_names) >= {"video_url", "pc", "caption", "model_name", "is_hard", "source_url", "source_row"}
    # Names with commas, semicolons and apostrophes made it through.
    names = {Path(u).name for u in ds["video_url"]}
    assert any("," in n for n in names) and any(";" in n for n in names) and any("'" in n for n in names)


def test_prepared_folder_is_scored_unchanged_by_the_tiny_critic(labelled_table, tmp_path: Path, tiny_critic) -> None:
    from recipe_lib.inference.score_config import ScoreConfig
    from recipe_lib.inference.scoring import score_videos
    from recipe_lib.profiles import get_profile

    path, _ = labelled_table
    out = tmp_path / "prepared"
    prepare_videophy2(VideoPhy2Config(source=str(path), out_dir=out, videos_dir=SHARED_VIDEOS, progress=False))
    result = score_videos(
        ScoreConfig(
            inputs=[str(out)],
            out_dir=tmp_path / "scores",
            model=str(tiny_critic),
            video=get_profile("demo").video,
            device="cpu",
            dtype="float32",
            batch_size=3,
            limit=3,
            workers=1,
        ),
        progress=False,
    )
    assert not result.skipped and len(result.rows) == 3
    assert [r["item"]["pc"] for r in result.rows] == [4, 5, 4]
    assert all(
        r["score"] in (1, 2, 3, 4, 5) and Path(r["video"]).parent == SHARED_VIDEOS.resolve() for r in result.rows
    )


def test_parquet_with_renamed_columns_and_a_dataset_dict_folder(labelled_table, tmp_path: Path) -> None:
    path, table = labelled_table
    good = table.iloc[:20].rename(columns={"video_url": "videopath", "pc": "human_pc"})
    good = good.assign(render_id=range(20), **{"Unnamed: 0": range(20)})
    parquet = tmp_path / "sub" / "labels.parquet"
    parquet.parent.mkdir()
    good.to_parquet(parquet)
    with pytest.raises(DataError, match="no 'video_url' column") as info:
        prepare_videophy2(VideoPhy2Config(source=str(parquet), out_dir=tmp_path / "x", videos_dir=SHARED_VIDEOS))
    assert "--rename videopath=video_url" in info.value.hint
    cfg = VideoPhy2Config(
        source=str(parquet),
        out_dir=tmp_path / "from_parquet",
        videos_dir=SHARED_VIDEOS,
        rename={"videopath": "video_url", "human_pc": "pc"},
        limit=5,
        progress=False,
    )
    result = prepare_videophy2(cfg)
    assert result.n_input == 5 and result.n_kept == 5 and not result.dropped
    assert result.extra_columns == ["render_id"] and result.ignored_columns == ["Unnamed: 0"]
    assert datasets.load_from_disk(str(tmp_path / "from_parquet"))["render_id"] == [0, 1, 2, 3, 4]

    # A DatasetDict saved with save_to_disk (what a hub download + save_to_disk gives).
    folder = tmp_path / "videophy2_dict"
    records = good.rename(columns={"videopath": "video_url", "human_pc": "pc"})
    records["video_url"] = [str(SHARED_VIDEOS / Path(u).name) for u in records["video_url"]]
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_pandas(records.iloc[:12], preserve_index=False),
            "test": datasets.Dataset.from_pandas(records.iloc[12:], preserve_index=False),
        }
    )
    dd.save_to_disk(str(folder))
    with pytest.raises(DataError, match="holds splits"):
        prepare_videophy2(VideoPhy2Config(source=str(folder), out_dir=tmp_path / "y"))
    result = prepare_videophy2(
        VideoPhy2Config(source=str(folder), split="test", out_dir=tmp_path / "y", progress=False)
    )
    assert result.n_kept == 8 and result.split == "test"


def test_missing_required_column_and_no_usable_rows_are_errors(labelled_table, tmp_path: Path) -> None:
    path, table = labelled_table
    no_pc = tmp_path / "no_pc.csv"
    table.drop(columns=["pc"]).to_csv(no_pc, index=False)
    proc = run_cli("prepare", "videophy2", "--source", str(no_pc), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "has no 'pc' column (required)" in proc.stderr
    assert "Traceback" not in proc.stderr

    remote_only = tmp_path / "remote.csv"
    pd.DataFrame(
        {"video_url": ["https://storage.example.com/a.mp4", "https://storage.example.com/b.mp4"], "pc": [4, 5]}
    ).to_csv(remote_only, index=False)
    with pytest.raises(DataError, match="all 2 were dropped \\(2 remote_offline\\)") as info:
        prepare_videophy2(VideoPhy2Config(source=str(remote_only), out_dir=tmp_path / "r"))
    assert "--download" in info.value.hint
    assert not (tmp_path / "r").exists()


def test_hub_id_gives_a_clear_error_when_the_hub_is_unreachable(tmp_path: Path) -> None:
    proc = run_cli(
        "prepare", "videophy2", "--source", "videophysics/videophy2_train", "--out", str(tmp_path / "o"), timeout=120
    )
    assert proc.returncode == 2
    assert "cannot load 'videophysics/videophy2_train' (split 'train') from the Hugging Face hub" in proc.stderr
    assert "save_to_disk" in proc.stderr and "Traceback" not in proc.stderr


def test_out_folder_that_is_not_ours_is_never_replaced(labelled_table, tmp_path: Path) -> None:
    path, _ = labelled_table
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.txt").write_text("keep me")
    with pytest.raises(DataError, match="was not written by this command"):
        prepare_videophy2(VideoPhy2Config(source=str(path), out_dir=out, videos_dir=SHARED_VIDEOS, limit=3))
    assert (out / "thesis.txt").read_text() == "keep me"


@pytest.fixture()
def clip_server(shared_videos: list[Path]) -> str:
    handler = functools.partial(QuietFiles, directory=str(SHARED_VIDEOS))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_download_mode_fetches_remote_clips_into_the_cache(clip_server: str, shared_videos, tmp_path: Path) -> None:
    from recipe_lib.video import file_digest

    clips = shared_videos[:4]
    urls = [f"{clip_server}/{urllib.parse.quote(p.name)}" for p in clips] + [f"{clip_server}/gone.mp4"]
    table = tmp_path / "remote.jsonl"
    pd.DataFrame({"video_url": urls, "pc": [1, 2, 3, 4, 5]}).to_json(table, orient="records", lines=True)
    out = tmp_path / "prepared"
    cfg = VideoPhy2Config(
        source=str(table),
        out_dir=out,
        download=True,
        cache_dir=tmp_path / "cache",
        workers=2,
        timeout=5,
        retries=0,
        progress=False,
    )
    result = prepare_videophy2(cfg)
    assert result.n_kept == 4 and result.downloads["downloaded"] == 4 and result.downloads["failed"] == 1
    assert [(d.row, d.reason) for d in result.dropped] == [(4, "download_failed")]
    assert "HTTP 404" in result.dropped[0].detail
    failures = [json.loads(x) for x in (out / "failures.jsonl").read_text().splitlines()]
    assert failures == [{"url": urls[4], "error": result.dropped[0].detail}]
    ds = datasets.load_from_disk(str(out))
    for local, original in zip(ds["video_url"], clips):
        assert Path(local).parent == (tmp_path / "cache" / "files").resolve()
        assert file_digest(local) == file_digest(original)
    # Rerun: everything comes from the cache; offline mode also finds the cached copies.
    again = prepare_videophy2(cfg)
    assert again.downloads["cached"] == 4 and again.downloads["downloaded"] == 0
    offline = prepare_videophy2(dataclasses_replace(cfg, download=False, out_dir=tmp_path / "offline"))
    assert offline.n_kept == 4 and [d.reason for d in offline.dropped] == ["remote_offline"]


def dataclasses_replace(cfg: VideoPhy2Config, **changes: object) -> VideoPhy2Config:
    import dataclasses

    return dataclasses.replace(cfg, **changes)
