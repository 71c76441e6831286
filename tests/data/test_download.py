"""Downloads against a real HTTP server on 127.0.0.1 (a thread in this process): success, errors, caps, kill+resume."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from recipe_lib.data.download import (
    DownloadCache,
    DownloadConfig,
    check_url,
    download_all,
    is_remote,
    read_failures,
    url_key,
)
from recipe_lib.errors import DataError
from support import REPO


def payload(name: str, size: int = 200_000) -> bytes:
    """Deterministic bytes for a file name."""
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class Handler(http.server.BaseHTTPRequestHandler):
    hits: Counter = Counter()
    flaky_left: dict[str, int] = {}

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def _send(self, body: bytes, length: int | None = None, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        # The client may give up (timeout, size cap, killed process): expected in these tests.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._route()

    def _route(self) -> None:
        path = self.path
        Handler.hits[path] += 1
        name = path.rsplit("/", 1)[-1]
        if path.startswith("/files/"):
            self._send(payload(name))
        elif path.startswith("/missing/"):
            self.send_error(404, "Not Found")
        elif path.startswith("/sleep/"):
            time.sleep(2.5)  # past the client's 1 s timeout
            self._send(payload(name))
        elif path.startswith("/truncated/"):
            body = payload(name)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) * 2))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
        elif path.startswith("/big/"):
            self._send(b"", length=50_000_000)
        elif path.startswith("/stream-big/"):
            # No Content-Length: the body runs until the connection closes, past the client's cap.
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(40):
                    self.wfile.write(b"x" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True
        elif path.startswith("/flaky/"):
            left = Handler.flaky_left.setdefault(path, 2)
            if left > 0:
                Handler.flaky_left[path] = left - 1
                self.send_error(503, "Busy")
            else:
                self._send(payload(name))
        elif path.startswith("/slow/"):
            body = payload(name, 300_000)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                for i in range(0, len(body), 4096):  # about 75 chunks x 0.05 s = 3.7 s at most
                    self.wfile.write(body[i : i + 4096])
                    self.wfile.flush()
                    time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):
                pass
        else:
            self.send_error(400, "unknown route")


@pytest.fixture(scope="module")
def server() -> str:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def cfg_for(tmp_path: Path, **kw: object) -> DownloadConfig:
    base = {"timeout": 1.0, "retries": 2, "backoff": 0.01, "workers": 3, "progress": False}
    base.update(kw)
    return DownloadConfig(cache_dir=tmp_path / "cache", **base)  # type: ignore[arg-type]


def test_success_is_cached_and_recorded(server: str, tmp_path: Path) -> None:
    urls = [f"{server}/files/clip_{i}.mp4" for i in range(4)]
    cfg = cfg_for(tmp_path)
    first = download_all(urls + urls[:1], cfg)  # a duplicate URL is fetched once
    assert first.n_requested == 4 and first.n_downloaded == 4 and not first.failures
    for i, url in enumerate(urls):
        path = first.files[url]
        assert path.name == f"{url_key(url)}.mp4"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(payload(f"clip_{i}.mp4")).hexdigest()
    index = DownloadCache(cfg.cache_dir).index()
    assert index[urls[0]]["sha256"] == hashlib.sha256(payload("clip_0.mp4")).hexdigest()
    assert read_failures(first.failures_path) == {}

    before = sum(Handler.hits[f"/files/clip_{i}.mp4"] for i in range(4))
    second = download_all(urls, cfg)
    assert second.n_cached == 4 and second.n_downloaded == 0
    assert sum(Handler.hits[f"/files/clip_{i}.mp4"] for i in range(4)) == before  # nothing fetched again


def test_damaged_cached_file_is_fetched_again(server: str, tmp_path: Path) -> None:
    url = f"{server}/files/damaged.mp4"
    cfg = cfg_for(tmp_path)
    path = download_all([url], cfg).files[url]
    path.write_bytes(b"not the original bytes")
    again = download_all([url], cfg)
    assert again.n_downloaded == 1
    assert path.read_bytes() == payload("damaged.mp4")


def test_failures_are_counted_with_reasons(server: str, tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, max_bytes=1_000_000)
    urls = {
        "missing": f"{server}/missing/a.mp4",
        "timeout": f"{server}/sleep/b.mp4",
        "truncated": f"{server}/truncated/c.mp4",
        "big": f"{server}/big/d.mp4",
        "stream": f"{server}/stream-big/e.mp4",
        "file": "file:///etc/passwd",
        "ftp": "ftp://example.com/x.mp4",
        "ok": f"{server}/files/ok.mp4",
    }
    start = time.perf_counter()
    result = download_all(list(urls.values()), cfg_for(tmp_path, max_bytes=1_000_000, retries=0))
    assert time.perf_counter() - start < 15
    f = result.failures
    assert set(result.files) == {urls["ok"]}
    assert "HTTP 404" in f[urls["missing"]]
    assert "timed out" in f[urls["timeout"]]
    assert "truncated" in f[urls["truncated"]] or "broke" in f[urls["truncated"]]
    assert "size cap" in f[urls["big"]] and "50000000" in f[urls["big"]]
    assert "size cap" in f[urls["stream"]]
    assert "file://" in f[urls["file"]] and "only http" in f[urls["file"]]
    assert "ftp://" in f[urls["ftp"]]
    assert result.summary()["failed"] == 7
    manifest = read_failures(result.failures_path)
    assert manifest == f
    # Nothing partial is left in the cache, and no failed URL has a file.
    files = list((cfg.cache_dir / "files").iterdir())
    assert [p.name for p in files] == [f"{url_key(urls['ok'])}.mp4"]


def test_transient_errors_are_retried_with_backoff(server: str, tmp_path: Path) -> None:
    url = f"{server}/flaky/f.mp4"
    result = download_all([url], cfg_for(tmp_path, retries=3))
    assert not result.failures and Handler.hits["/flaky/f.mp4"] == 3  # two 503s, then the file
    url2 = f"{server}/flaky/g.mp4"
    result = download_all([url2], cfg_for(tmp_path, retries=1))
    assert "HTTP 503" in result.failures[url2] and "after 2 attempts" in result.failures[url2]
    # A rerun retries only what failed: the server has recovered by now.
    result = download_all([url, url2], cfg_for(tmp_path, retries=1))
    assert not result.failures and result.n_cached == 1 and result.n_downloaded == 1


def test_url_checks() -> None:
    check_url("https://example.com/a.mp4")
    for bad in ("file:///tmp/a.mp4", "ftp://h/a.mp4", "/tmp/a.mp4", "http:///nohost.mp4"):
        with pytest.raises(DataError, match="refused"):
            check_url(bad)
    assert is_remote("https://x/a.mp4") and is_remote("file:///a") and not is_remote("clips/a.mp4")
    assert not is_remote(r"C:\clips\a.mp4")


KILL_SCRIPT = """
import json, sys
from pathlib import Path
from recipe_lib.data.download import DownloadConfig, download_all
cfg = DownloadConfig(cache_dir=Path(sys.argv[1]), workers=1, timeout=5, retries=0, progress=False)
download_all(json.loads(sys.argv[2]), cfg)
"""


def test_killed_download_leaves_no_complete_looking_file_and_resumes(server: str, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    urls = [f"{server}/files/k1.mp4", f"{server}/files/k2.mp4", f"{server}/slow/k3.mp4"]
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(cache_dir), json.dumps(urls)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    slow_target = DownloadCache(cache_dir).path_for(urls[2])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            parts = list(slow_target.parent.glob(f"{slow_target.name}.*.part")) if slow_target.parent.exists() else []
            if parts and parts[0].stat().st_size > 0:
                break
            assert proc.poll() is None, "the download finished before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no partial file appeared within 30 s")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert not slow_target.exists(), "a killed download must not leave a complete-looking file"
    assert list(slow_target.parent.glob("*.part")), "the partial bytes stay under a .part name"
    index = DownloadCache(cache_dir).index()
    assert urls[2] not in index and {urls[0], urls[1]} <= set(index)

    hits_before = {u: Handler.hits[u.replace(server, "")] for u in urls}
    result = download_all(urls, DownloadConfig(cache_dir=cache_dir, workers=2, timeout=5, progress=False))
    assert not result.failures and result.n_cached == 2 and result.n_downloaded == 1
    assert Handler.hits["/files/k1.mp4"] == hits_before[urls[0]]  # finished files are not fetched again
    assert Handler.hits["/slow/k3.mp4"] == hits_before[urls[2]] + 1
    expected = {urls[0]: payload("k1.mp4"), urls[1]: payload("k2.mp4"), urls[2]: payload("k3.mp4", 300_000)}
    for url, body in expected.items():
        assert hashlib.sha256(result.files[url].read_bytes()).hexdigest() == hashlib.sha256(body).hexdigest()
    assert not list(slow_target.parent.glob("*.part")), "stale partial files are removed on the rerun"
