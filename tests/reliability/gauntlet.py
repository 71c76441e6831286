"""Helpers of the reliability gauntlet: real bad media, a loopback HTTP server, process kills, output checks.

Everything here is real: files are written with PIL, the ``wave`` module and PyAV; the server is a thread serving
127.0.0.1; kills are SIGKILL to real processes; a small disk is a real tmpfs mount (when the kernel lets us mount).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import wave
from collections import Counter
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from support import REPO

# --------------------------------------------------------------------------------------------------------------------
# what the user sees


def error_lines(result: subprocess.CompletedProcess) -> tuple[str, str | None]:
    """Check a failed command printed one ``error:`` line (plus at most one ``hint:`` line) and no traceback, with
    exit status 2; return (error text, hint text)."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    hints = [line for line in lines if line.startswith("hint: ")]
    assert len(errors) == 1 and len(hints) <= 1, result.stderr
    if hints:
        assert lines.index(hints[0]) == lines.index(errors[0]) + 1, "the hint follows its error"
    return errors[0].removeprefix("error: "), hints[0].removeprefix("hint: ") if hints else None


def skip_lines(stdout: str) -> dict[str, str]:
    """``skipped <video>: <reason>`` lines of ``plausibility score`` as file name -> reason."""
    out = {}
    for line in stdout.splitlines():
        if line.startswith("  skipped "):
            video, reason = line.removeprefix("  skipped ").split(": ", 1)
            out[Path(video).name] = reason
    return out


def jsonl_rows(path: Path) -> list[dict]:
    """Rows of a JSONL file, checking that every line is whole (ends with a newline and parses)."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path} ends with a partial line"
    return [json.loads(line) for line in data.splitlines()]


def assert_complete_outputs(folder: Path) -> None:
    """Every file under its final name in ``folder`` is whole: JSON parses, JSONL lines parse, CSV has a header and
    rows of the same width, HTML is closed. (Temporary ``*.tmp`` files are never read back and are not checked.)"""
    import csv

    for path in sorted(folder.rglob("*")):
        if not path.is_file() or ".tmp" in path.name:
            continue
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".jsonl":
            jsonl_rows(path)
        elif path.suffix == ".csv":
            rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
            assert rows and all(len(r) == len(rows[0]) for r in rows), f"{path} is cut short"
        elif path.suffix == ".html":
            assert path.read_text(encoding="utf-8").rstrip().endswith("</html>"), f"{path} is cut short"


# --------------------------------------------------------------------------------------------------------------------
# real bad media


def write_video(path: Path, frames: np.ndarray, fps: int = 8, pix_fmt: str = "yuv420p", **options: str) -> Path:
    """An H.264 mp4 through PyAV (the container options e.g. ``movflags=faststart`` go to the muxer)."""
    import av

    with av.open(str(path), "w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        stream.options = {"preset": "ultrafast"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def moving_square(n: int, height: int, width: int, size: int = 20) -> np.ndarray:
    """Frames of a white square crossing a black background (cheap to encode and to decode)."""
    frames = np.zeros((n, height, width, 3), np.uint8)
    for i in range(n):
        x = (i * 3) % max(1, width - size)
        frames[i, height // 2 - size // 2 : height // 2 + size // 2, x : x + size] = 255
    return frames


def make_bad_media(folder: Path, good_clip: Path) -> dict[str, Path]:
    """One file per kind of bad video input, made for real; returns kind -> path."""
    from PIL import Image

    from recipe_lib.data.synthetic import write_clip

    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {"missing": folder / "missing.mp4"}
    made["empty"] = folder / "empty.mp4"
    made["empty"].write_bytes(b"")
    data = good_clip.read_bytes()
    made["truncated_file"] = folder / "cut_in_half.mp4"  # the index (moov) is at the end: gone
    made["truncated_file"].write_bytes(data[: len(data) // 2])
    # Index first (faststart), then only the first half of the frames' bytes: the header promises 64 frames.
    full = write_video(folder / ".whole_faststart.mp4", moving_square(64, 64, 64), movflags="faststart")
    whole = full.read_bytes()
    full.unlink()
    made["truncated_stream"] = folder / "stream_cut_short.mp4"
    made["truncated_stream"].write_bytes(whole[: len(whole) // 2])
    made["png"] = folder / "picture.mp4"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(made["png"], format="PNG")
    made["wav"] = folder / "sound.mp4"
    with wave.open(str(made["wav"]), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(8000, np.int16).tobytes())
    made["text"] = folder / "notes.mp4"
    made["text"].write_text("a shot list, not a video\n" * 40)
    made["one_frame"] = write_clip(np.full((1, 64, 64, 3), 128, np.uint8), folder / "one_frame.mp4", fps=8)
    made["one_pixel"] = write_video(
        folder / "one_pixel.mp4", np.arange(8, dtype=np.uint8).repeat(3).reshape(8, 1, 1, 3) * 30, pix_fmt="yuv444p"
    )
    made["huge"] = make_huge_clip(folder / "huge_10000x10000.mp4")
    return made


HUGE_SCRIPT = """
import sys
from fractions import Fraction
import av
with av.open(sys.argv[1], "w", format="mp4") as c:
    s = c.add_stream("libx264", rate=Fraction(1))
    s.width = s.height = 10000
    s.pix_fmt = "yuv420p"
    s.options = {"preset": "ultrafast", "crf": "51", "tune": "zerolatency"}
    frame = av.VideoFrame(10000, 10000, "yuv420p")
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    for p in s.encode(frame):
        c.mux(p)
    for p in s.encode():
        c.mux(p)
"""


def make_huge_clip(path: Path) -> Path:
    """A real one-frame 10000x10000 H.264 mp4 (black, ~300 KB), encoded in a child process (x264 needs ~650 MB)."""
    subprocess.run([sys.executable, "-c", HUGE_SCRIPT, str(path)], check=True, timeout=120, capture_output=True)
    return path


# --------------------------------------------------------------------------------------------------------------------
# processes


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(proc: subprocess.Popen) -> list[int]:
    """SIGKILL a process and everything it started (a notebook kernel runs in a session of its own), as an OOM kill
    or a lost machine would; returns the pids killed besides ``proc``."""
    below = descendants(proc.pid)
    for pid in [proc.pid, *below]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() and not _zombie(p) for p in below):
        time.sleep(0.05)
    return below


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``plausibility ARGS`` in the background (output discarded), as :func:`conftest.run_cli` runs it."""
    return subprocess.Popen(
        [sys.executable, "-m", "recipe_lib.cli", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_until(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120, poll: float = 0.002) -> None:
    """Poll ``ready`` until it holds; fail if the process ends first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before the point where it was to be killed")
        time.sleep(poll)
    proc.kill()
    proc.wait()
    pytest.fail(f"the kill point was not reached within {timeout} s")


def line_count(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


# --------------------------------------------------------------------------------------------------------------------
# a small real disk


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``path`` (skips the test, with the reason, where mounting is not permitted)."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a small real disk here")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): needs root in a namespace "
                    "that allows mounts")  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True, capture_output=True)


# --------------------------------------------------------------------------------------------------------------------
# a loopback HTTP server


class ClipServer:
    """Serves registered bytes on 127.0.0.1: ``/files/<name>`` at once, ``/slow/<name>`` in 4 KB chunks 0.05 s apart,
    ``/big/<name>`` announcing 50 MB, ``/stream-big/<name>`` streaming 4 MB without a length; counts every hit."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hits: Counter = Counter()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    server._route(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def _route(self, h: http.server.BaseHTTPRequestHandler) -> None:
        self.hits[h.path] += 1
        kind, _, name = h.path.lstrip("/").partition("/")
        body = self.files.get(name)
        if kind in ("files", "slow") and body is not None:
            h.send_response(200)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            step = 4096 if kind == "slow" else len(body)
            for i in range(0, len(body), step):
                h.wfile.write(body[i : i + step])
                h.wfile.flush()
                if kind == "slow":
                    time.sleep(0.05)
        elif kind == "big":
            h.send_response(200)
            h.send_header("Content-Length", str(50_000_000))
            h.end_headers()
        elif kind == "stream-big":
            h.send_response(200)
            h.end_headers()
            for _ in range(64):
                h.wfile.write(b"\0" * 65536)
            h.close_connection = True
        else:
            h.send_error(404, "Not Found")

    def __enter__(self) -> ClipServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
