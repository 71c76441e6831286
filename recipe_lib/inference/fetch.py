"""Clips given as URLs, for scoring: fetched once into the download cache ``prepare`` uses, then read as local files.

``http://`` and ``https://`` go through :func:`recipe_lib.data.download.download_one` (size cap, retries with
back-off, content-checked cache); object stores (``s3://``, ``gs://``, ``az://``) are streamed through ``fsspec``
(with its protocol package, e.g. ``s3fs`` or ``gcsfs``) into the same cache, under the same size cap. Other schemes
(``ftp://``, ``file://``) are refused. A URL that cannot be fetched is a recorded skip with the reason, never a crash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import urllib.parse
from pathlib import Path

from recipe_lib.data.download import DownloadCache, DownloadConfig, DownloadFailure, download_one, is_remote
from recipe_lib.errors import DataError
from recipe_lib.io import real_url, redact, redact_url

HTTP_SCHEMES = ("http", "https")
OBJECT_STORE_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")  # read through fsspec


def default_cache_dir() -> Path:
    from recipe_lib.config import build_dir

    return build_dir() / "cache" / "videos"


def scheme_of(url: str) -> str:
    return urllib.parse.urlsplit(str(url)).scheme.lower() if is_remote(url) else ""


@dataclasses.dataclass
class FetchFailure(Exception):
    """A URL that could not be fetched; ``reason`` is what the skip records."""

    reason: str

    def __str__(self) -> str:
        return self.reason


def fetch(url: str, cache_dir: Path | None = None, cfg: DownloadConfig | None = None) -> Path:
    """The local file of ``url`` (fetched now or found in the cache); raises :class:`FetchFailure`."""
    cache_dir = Path(cache_dir or default_cache_dir())
    cfg = cfg or DownloadConfig(cache_dir=cache_dir, progress=False)
    cache = DownloadCache(cache_dir)
    shown = redact_url(url)  # what a reason names; the request goes to the URL as listed (credentials kept)
    url = real_url(url)
    scheme = scheme_of(url)
    try:
        if scheme in HTTP_SCHEMES:
            return download_one(url, cache, cfg)[0]
        if scheme in OBJECT_STORE_SCHEMES:
            return _fetch_fsspec(url, cache, cfg)
        raise DataError(
            f"refused to read {shown}: '{scheme}://' is not allowed; http(s)://, s3:// and gs:// URLs are read"
        )
    except DownloadFailure as exc:
        raise FetchFailure(redact(f"cannot download {shown}: {exc.message}")) from exc
    except DataError as exc:
        raise FetchFailure(redact(exc.message)) from exc
    except OSError as exc:
        raise FetchFailure(redact(f"cannot download {shown}: {exc.strerror or exc}")) from exc


def _fetch_fsspec(url: str, cache: DownloadCache, cfg: DownloadConfig) -> Path:
    scheme = scheme_of(url)
    try:
        import fsspec
    except ImportError as exc:
        raise DataError(f"cannot read {url}: {scheme}:// URLs need fsspec (pip install fsspec)") from exc
    try:
        fsspec.get_filesystem_class(scheme)
    except (ImportError, ValueError) as exc:
        raise DataError(f"cannot read {url}: no fsspec filesystem for {scheme}:// ({exc})") from exc
    hit = cache.lookup(url, verify=cfg.verify)
    if hit is not None:
        return hit
    target = cache.path_for(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f"{target.name}.{os.getpid()}.part")
    h = hashlib.sha256()
    size = 0
    try:
        with fsspec.open(url, "rb") as src, part.open("wb") as dst:
            while block := src.read(cfg.chunk_size):
                size += len(block)
                if cfg.max_bytes is not None and size > cfg.max_bytes:
                    raise DownloadFailure(f"body grew past the size cap of {cfg.max_bytes} bytes; stopped", False)
                h.update(block)
                dst.write(block)
            dst.flush()
            os.fsync(dst.fileno())
        if size == 0:
            raise DownloadFailure("the object is empty", retry=False)
        os.replace(part, target)
    except FileNotFoundError as exc:
        raise DownloadFailure("no such object", retry=False) from exc
    finally:
        part.unlink(missing_ok=True)
    cache.record(url, target, h.hexdigest(), size)
    return target
