"""Fetch remote clips into a content-addressed cache: http(s) only, parallel, resumable, honest about failures.

Layout of a cache folder::

    <cache>/files/<sha256(url)><suffix>   one file per URL (the suffix of the URL's path, e.g. ``.mp4``)
    <cache>/index.jsonl                   one record per finished download: url, file, bytes, sha256 of the content
    <cache>/failures.jsonl                the URLs that failed in the last run, with the error (rewritten each run)

A file is looked up by the sha256 of its URL; its content digest is recorded in the index when it is written and
checked again on later runs (``verify=True``), so a file changed or damaged on disk is fetched anew. Bytes are streamed
to ``<file>.<pid>.part`` and moved into place with :func:`os.replace` only after the body is complete and within the
size cap: a killed run leaves at most a ``.part`` file (removed on the next run), never a complete-looking damaged
file. Rerunning downloads only what is missing or failed.

Only ``http`` and ``https`` URLs are fetched; ``file://``, ``ftp://`` and other schemes are refused with a message.
Transient problems (connection errors, timeouts, truncated bodies, HTTP 429 and 5xx) are retried with exponential
back-off; permanent ones (other 4xx, over the size cap, refused scheme) are not.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import json
import os
import threading
import time
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import Any

from recipe_lib.errors import DataError
from recipe_lib.io import redact, redact_url

ALLOWED_SCHEMES = ("http", "https")
DEFAULT_MAX_BYTES = 2 * 1024**3  # 2 GiB: far above any VideoPhy-2 clip, low enough to stop a runaway response
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
DEFAULT_DEADLINE = 600.0  # seconds one download may take in all, whatever the server's pace
MAX_INFLATION = 20  # decoded / sent bytes of a Content-Encoding body: a video hardly compresses, a bomb inflates 1000x
BOMB_FLOOR = 1 << 20  # small bodies may inflate freely (a text error page)


class DownloadFailure(Exception):
    """One URL could not be fetched; ``retry`` says whether trying again may help."""

    def __init__(self, message: str, retry: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retry = retry


@dataclasses.dataclass
class DownloadConfig:
    """How clips are fetched.

    ``timeout`` bounds the connection and each wait for bytes (seconds), ``deadline`` the whole download: connect,
    headers and body of every attempt and the pauses between them (seconds, ``None``: no bound; at the deadline the
    connection is closed, whatever the server is sending, and the URL is not tried again in the same run);
    ``retries`` is the number of extra attempts after the first for transient errors, waiting
    ``backoff * 2**attempt`` seconds (at most ``max_backoff``) between
    them; ``max_bytes`` caps one file (``None``: no cap).
    """

    cache_dir: Path
    workers: int = 4
    timeout: float = 30.0
    deadline: float | None = DEFAULT_DEADLINE
    retries: int = 3
    backoff: float = 1.0
    max_backoff: float = 30.0
    max_bytes: int | None = DEFAULT_MAX_BYTES
    chunk_size: int = 1 << 16
    verify: bool = True
    progress: bool = True
    failures_path: Path | None = None
    user_agent: str = "plausibility-recipes"


@dataclasses.dataclass
class DownloadResult:
    """Where each URL landed (``files``) and why the others did not (``failures``)."""

    files: dict[str, Path]
    failures: dict[str, str]
    n_requested: int
    n_downloaded: int
    n_cached: int
    seconds: float
    failures_path: Path

    def summary(self) -> dict[str, Any]:
        return {
            "requested": self.n_requested,
            "downloaded": self.n_downloaded,
            "cached": self.n_cached,
            "failed": len(self.failures),
            "seconds": round(self.seconds, 3),
            "failures_file": str(self.failures_path),
        }


def is_remote(url: str) -> bool:
    """True for anything with a URL scheme (``http://``, ``ftp://``, ``file://``), false for plain paths.

    A Windows drive letter (``C:\\clips\\a.mp4``) is a path, not a scheme."""
    scheme = urllib.parse.urlsplit(str(url)).scheme
    return len(scheme) > 1


def check_url(url: str) -> None:
    """Raise :class:`DataError` unless ``url`` is an http(s) URL with a host."""
    parts = urllib.parse.urlsplit(str(url))
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        shown = f"'{scheme}://'" if scheme else "no scheme"
        raise DataError(
            f"refused to download {redact_url(url)}: {shown} is not allowed, only http:// and https:// URLs are "
            "fetched",
            hint="give local files as plain paths, or serve them over http(s)",
        )
    if not parts.netloc:
        raise DataError(f"refused to download {redact_url(url)}: the URL has no host")


def url_key(url: str) -> str:
    """The cache key of a URL: sha256 of its text."""
    return hashlib.sha256(str(url).encode("utf-8")).hexdigest()


def url_suffix(url: str) -> str:
    """The file suffix of the URL's path (``.mp4``), or ``""`` when it has none (or an implausible one)."""
    suffix = PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).suffix.lower()
    return suffix if 1 < len(suffix) <= 8 and suffix[1:].isalnum() else ""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class DownloadCache:
    """A content-addressed folder of downloaded files (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.files_dir = self.root / "files"
        self.index_path = self.root / "index.jsonl"
        self._lock = threading.Lock()
        self._index: dict[str, dict[str, Any]] | None = None

    def path_for(self, url: str) -> Path:
        return self.files_dir / f"{url_key(url)}{url_suffix(url)}"

    def index(self) -> dict[str, dict[str, Any]]:
        """URL (as recorded: credentials redacted) -> latest record; lines cut short by a killed run are ignored."""
        if self._index is None:
            records: dict[str, dict[str, Any]] = {}
            if self.index_path.exists():
                with self.index_path.open(encoding="utf-8") as fh:
                    for line in fh:
                        try:
                            rec = json.loads(line)
                        except json.JSONDecodeError:
                            continue
                        if isinstance(rec, dict) and "url" in rec and "sha256" in rec:
                            records[rec["url"]] = rec
            self._index = records
        return self._index

    def record(self, url: str, path: Path, digest: str, size: int) -> None:
        rec = {"url": redact_url(url), "file": path.name, "bytes": size, "sha256": digest, "time": time.time()}
        with self._lock:
            self.root.mkdir(parents=True, exist_ok=True)
            with self.index_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            self.index()[rec["url"]] = rec

    def lookup(self, url: str, verify: bool = True) -> Path | None:
        """The cached file of ``url`` if it is there and (with ``verify``) its content matches the index."""
        path = self.path_for(url)
        if not path.is_file():
            return None
        rec = self.index().get(redact_url(url))
        if rec is not None and rec.get("file") != path.name:
            rec = None  # the same URL with other credentials: a file of its own
        if rec is None:
            # Moved into place but the run died before the index line was written: the file is whole (it only gets
            # its final name once complete), so record it now.
            self.record(url, path, sha256_file(path), path.stat().st_size)
            return path
        if verify and (path.stat().st_size != rec.get("bytes") or sha256_file(path) != rec["sha256"]):
            return None
        return path

    def remove_stale_parts(self) -> int:
        """Delete ``.part`` files left by runs that are no longer alive; returns how many."""
        removed = 0
        if not self.files_dir.is_dir():
            return 0
        for part in self.files_dir.glob("*.part"):
            pid = part.suffixes[-2][1:] if len(part.suffixes) >= 2 else ""
            if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
                continue
            part.unlink(missing_ok=True)
            removed += 1
        return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fetch(session: Any, url: str, target: Path, cfg: DownloadConfig, seconds: float | None) -> tuple[str, int]:
    """One attempt: stream ``url`` into ``target`` atomically within ``seconds`` (the time the download's deadline
    leaves; None: no bound); returns (sha256, bytes).

    The deadline covers the whole exchange: a :class:`recipe_lib.net.Deadline` closes the connection when it passes,
    whether the server drips its headers or its body, where a read timeout would start again with every byte. The
    body is read with ``read1`` (whatever the socket holds, at most a chunk). A ``Content-Encoding`` (gzip) is
    decoded; ``Content-Length`` is compared with the bytes that came over the wire, and a body that inflates more than
    ``MAX_INFLATION`` times is stopped as a decompression bomb."""
    import requests
    import urllib3

    from recipe_lib import net

    # URLs are de-duplicated per run, so one process writes one URL at a time: the pid makes the name unique.
    part = target.with_name(f"{target.name}.{os.getpid()}.part")
    size = 0
    expected: int | None = None
    headers = False  # the status line and headers came
    try:
        with net.Deadline(seconds) as deadline:
            try:
                response = session.get(url, stream=True, timeout=deadline.timeouts(cfg.timeout), allow_redirects=True)
            except requests.exceptions.Timeout as exc:
                raise DownloadFailure(f"timed out after {cfg.timeout:g} s waiting for the server", retry=True) from exc
            except requests.exceptions.InvalidSchema as exc:
                raise DownloadFailure(f"redirected to a URL that is not http(s): {_short(exc)}", retry=False) from exc
            except requests.exceptions.RequestException as exc:
                raise DownloadFailure(f"connection failed: {_short(exc)}", retry=True) from exc
            headers = True
            with response:
                if response.status_code >= 400:
                    reason = response.reason or ""
                    raise DownloadFailure(
                        f"HTTP {response.status_code} {reason}".strip(), retry=response.status_code in RETRY_STATUS
                    )
                final = urllib.parse.urlsplit(response.url).scheme.lower()
                if final not in ALLOWED_SCHEMES:
                    raise DownloadFailure(f"redirected to a '{final}' URL, which is not downloaded", retry=False)
                declared = response.headers.get("Content-Length")
                expected = int(declared) if declared and declared.isdigit() else None
                encoded = response.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")
                if cfg.max_bytes is not None and expected is not None and expected > cfg.max_bytes:
                    raise DownloadFailure(
                        f"file is {expected} bytes, over the size cap of {cfg.max_bytes} bytes", retry=False
                    )
                h = hashlib.sha256()
                part.parent.mkdir(parents=True, exist_ok=True)
                raw = response.raw
                try:
                    with part.open("wb") as fh:
                        while block := raw.read1(cfg.chunk_size, decode_content=True):
                            size += len(block)
                            if cfg.max_bytes is not None and size > cfg.max_bytes:
                                raise DownloadFailure(
                                    f"body grew past the size cap of {cfg.max_bytes} bytes; stopped", retry=False
                                )
                            wire = raw.tell()
                            if encoded and size > BOMB_FLOOR and size > MAX_INFLATION * max(1, wire):
                                raise DownloadFailure(
                                    f"the {response.headers.get('Content-Encoding')} body inflates more than "
                                    f"{MAX_INFLATION} times ({wire} bytes sent, {size} decoded so far): refused as "
                                    "a decompression bomb",
                                    retry=False,
                                )
                            h.update(block)
                            fh.write(block)
                        fh.flush()
                        os.fsync(fh.fileno())
                except (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError) as exc:
                    raise DownloadFailure(
                        f"timed out after {cfg.timeout:g} s without data (got {size} bytes)", retry=True
                    ) from exc
                except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                    raise DownloadFailure(
                        f"connection broke after {size} bytes"
                        + (f" of {expected}" if expected is not None else "")
                        + f": {_short(exc)}",
                        retry=True,
                    ) from exc
                wire = raw.tell()  # bytes as sent (compressed when encoded): what Content-Length counts
        # Checked after the deadline's block: a connection it cut off may look like a short, complete body.
        if expected is not None and wire != expected:
            raise DownloadFailure(f"truncated body: got {wire} of {expected} bytes", retry=True)
        if size == 0:
            raise DownloadFailure("the server sent an empty body", retry=True)
        os.replace(part, target)
        return h.hexdigest(), size
    except net.DeadlineExceeded as exc:
        got = "the response headers never came whole"
        if headers:
            got = f"got {size} bytes" + (f" of {expected}" if expected is not None else "")
        raise DownloadFailure(
            f"not complete within the deadline of {cfg.deadline:g} s ({got}); tried again on the next run", retry=False
        ) from exc
    finally:
        part.unlink(missing_ok=True)


def _short(exc: BaseException) -> str:
    text = redact(str(exc).splitlines()[0]) if str(exc) else exc.__class__.__name__
    return text if len(text) <= 200 else text[:197] + "..."


def download_one(url: str, cache: DownloadCache, cfg: DownloadConfig, session: Any = None) -> tuple[Path, bool]:
    """Fetch one URL into ``cache`` (with retries, all of them within ``cfg.deadline``); returns (path,
    downloaded_now). ``session``: one from :func:`recipe_lib.net.session` (a new one when None), whose connections
    the deadline can close.

    Raises :class:`DataError` for a refused URL and :class:`DownloadFailure` when every attempt failed."""
    from recipe_lib import net

    check_url(url)
    hit = cache.lookup(url, verify=cfg.verify)
    if hit is not None:
        return hit, False
    target = cache.path_for(url)
    end = None if cfg.deadline is None else time.monotonic() + cfg.deadline
    own = session is None
    session = session or net.session()
    session.headers.setdefault("User-Agent", cfg.user_agent)
    try:
        attempt = 0
        while True:
            try:
                left = None if end is None else end - time.monotonic()
                digest, size = _fetch(session, url, target, cfg, left)
                cache.record(url, target, digest, size)
                return target, True
            except DownloadFailure as exc:
                pause = min(cfg.max_backoff, cfg.backoff * 2**attempt)
                late = end is not None and time.monotonic() + pause >= end
                if not exc.retry or attempt >= cfg.retries or late:
                    if attempt:
                        exc.message = f"{exc.message} (after {attempt + 1} attempts)"
                    if exc.retry and late and attempt < cfg.retries:
                        exc.message += f"; no time left for another attempt within the deadline of {cfg.deadline:g} s"
                    raise
                time.sleep(pause)
                attempt += 1
    finally:
        if own:
            session.close()


def download_all(urls: list[str], cfg: DownloadConfig) -> DownloadResult:
    """Fetch every URL (duplicates once) with ``cfg.workers`` threads; failures are recorded, never raised.

    The failures of this run are written to ``failures.jsonl`` (``{"url", "error"}`` per line); an empty file means
    everything is there. Rerun with the same URLs to retry only what failed or is missing.
    """
    from tqdm import tqdm

    from recipe_lib import net

    start = time.perf_counter()
    cache = DownloadCache(cfg.cache_dir)
    cache.files_dir.mkdir(parents=True, exist_ok=True)
    cache.remove_stale_parts()
    cache.index()  # read once before the workers start sharing it
    unique = list(dict.fromkeys(str(u) for u in urls))
    files: dict[str, Path] = {}
    failures: dict[str, str] = {}
    downloaded = cached = 0
    local = threading.local()
    sessions: list[Any] = []
    sessions_lock = threading.Lock()

    def session() -> Any:
        if not hasattr(local, "session"):
            local.session = net.session()
            with sessions_lock:
                sessions.append(local.session)
        return local.session

    def work(url: str) -> tuple[Path, bool]:
        return download_one(url, cache, cfg, session())

    bar = tqdm(total=len(unique), desc="downloading", unit="file", disable=not cfg.progress)
    try:
        with cf.ThreadPoolExecutor(max_workers=max(1, cfg.workers)) as pool:
            futures = {pool.submit(work, url): url for url in unique}
            for fut in cf.as_completed(futures):
                url = futures[fut]
                try:
                    path, fresh = fut.result()
                    files[url] = path
                    downloaded += fresh
                    cached += not fresh
                except DownloadFailure as exc:
                    failures[url] = exc.message
                except DataError as exc:
                    failures[url] = exc.message
                except OSError as exc:
                    failures[url] = f"cannot write the file: {exc.strerror or exc}"
                bar.update(1)
                bar.set_postfix(failed=len(failures), refresh=False)
    finally:
        bar.close()
        for s in sessions:
            s.close()
    failures_path = Path(cfg.failures_path or cache.root / "failures.jsonl")
    write_failures(failures_path, failures)
    ordered = {u: files[u] for u in unique if u in files}
    return DownloadResult(
        ordered, failures, len(unique), downloaded, cached, time.perf_counter() - start, failures_path
    )


def write_failures(path: Path, failures: dict[str, str]) -> Path:
    """Write the failure manifest atomically (one ``{"url", "error"}`` JSON object per line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for url, error in failures.items():
            fh.write(json.dumps({"url": redact_url(url), "error": redact(error)}, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def read_failures(path: str | Path) -> dict[str, str]:
    """The failure manifest as url -> error (empty when the file is absent)."""
    path = Path(path)
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            out[rec["url"]] = rec["error"]
    return out
