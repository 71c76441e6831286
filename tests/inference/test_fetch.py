"""Clips given as http URLs are scored: fetched from a real HTTP server on 127.0.0.1 through the download cache, keyed
by content (the same keys and scores as the local files), a URL that fails is a recorded skip, a rerun fetches
nothing."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading

import pandas as pd
import pytest

from recipe_lib.inference.score_config import ScoreConfig
from recipe_lib.inference.scoring import score_videos
from support import demo_score_config


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path):  # noqa: ANN201
    root = tmp_path / "served"
    root.mkdir()
    _Handler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _cfg(tiny_critic, inputs, out, cache) -> ScoreConfig:  # noqa: ANN001
    return demo_score_config(tiny_critic, inputs, out, download_cache=cache)


def test_a_table_of_http_urls_is_scored_like_the_local_files(tiny_critic, synth_clips, server, tmp_path):
    root, base = server
    clips = sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[:3]
    for c in clips:
        shutil.copy(c, root / c.name)
    urls = [f"{base}/{c.name}" for c in clips] + [f"{base}/missing.mp4"]
    table = tmp_path / "clips.csv"
    pd.DataFrame({"video_url": urls, "pc": [5, 1, 3, 2]}).to_csv(table, index=False)
    cache = tmp_path / "cache"

    result = score_videos(_cfg(tiny_critic, [table], tmp_path / "out", cache), progress=False)
    assert [r["video"] for r in result.rows] == urls[:3]
    assert [r["item"]["pc"] for r in result.rows] == [5, 1, 3]
    (skip,) = result.skipped
    assert skip["video"] == urls[3] and skip["reason"] == f"cannot download {urls[3]}: HTTP 404 File not found"
    local = {
        r["key"]: r for r in score_videos(_cfg(tiny_critic, clips, tmp_path / "local", cache), progress=False).rows
    }
    assert {r["key"] for r in result.rows} == set(local)  # keyed by content: the same clips, wherever they came from
    for r in result.rows:
        assert r["score"] == local[r["key"]]["score"]
        assert r["expected_score"] == pytest.approx(local[r["key"]]["expected_score"], abs=1e-4)

    fetched = len(_Handler.requests)
    again = score_videos(_cfg(tiny_critic, [table], tmp_path / "out", cache), progress=False)
    assert again.n_cached == 3 and again.n_scored_now == 0
    assert _Handler.requests[fetched:] == ["/missing.mp4"]  # only the failed URL is tried again


def test_a_url_given_on_the_command_line(tiny_critic, synth_clips, server, tmp_path):
    root, base = server
    clip = sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[0]
    shutil.copy(clip, root / "a clip.mp4")
    url = f"{base}/a%20clip.mp4"
    result = score_videos(_cfg(tiny_critic, [url], tmp_path / "out", tmp_path / "cache"), progress=False)
    assert [r["video"] for r in result.rows] == [url] and not result.skipped


def test_refused_schemes_and_a_missing_object_store_package_are_recorded_skips(tiny_critic, tmp_path):
    import importlib.util

    urls = ["ftp://127.0.0.1/clip.mp4"]
    if importlib.util.find_spec("s3fs") is None:  # (with s3fs installed the URL would go out to a real bucket)
        urls.append("s3://bucket/clip.mp4")
    result = score_videos(_cfg(tiny_critic, urls, tmp_path / "out", tmp_path / "cache"), progress=False)
    assert not result.rows
    reasons = {s["video"]: s["reason"] for s in result.skipped}
    assert reasons[urls[0]] == (
        f"refused to read {urls[0]}: 'ftp://' is not allowed; http(s)://, s3:// and gs:// URLs are read"
    )
    if len(urls) > 1:
        assert reasons[urls[1]].startswith(f"cannot read {urls[1]}: no fsspec filesystem for s3://")
