"""Crash-safe file writing, used by every stage: a file is written under a temporary name beside it and moved into
place in one ``os.replace``, so a killed run (or a full disk) never leaves a partial file under the final name; JSONL
logs are appended and fsynced line by line and read back up to the first damaged line.

Nothing is ever written through a symbolic link: a final name that is a link is refused (its target is someone
else's file), and the temporary file is created with ``O_EXCL | O_NOFOLLOW``. An output folder records the files a
command wrote in :data:`OUTPUT_MARKER`; :func:`claim_outputs` (called by every stage before any work) refuses to
replace a file that is not recorded there, or that another command wrote, so a mistyped ``--out`` never destroys data
the command did not make."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import os
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeVar

from recipe_lib.errors import RecipeError

T = TypeVar("T")

OUTPUT_MARKER = ".plausibility-outputs.json"  # per output folder: file name -> the stage that wrote it
_stage: contextvars.ContextVar[str | None] = contextvars.ContextVar("output_stage", default=None)


@contextlib.contextmanager
def output_stage(name: str) -> Iterator[str]:
    """Outputs claimed inside are recorded as written by stage ``name`` (``score``, ``evaluate``, ``rank``,
    ``synth``); the outermost stage wins, so ``score_videos`` run by ``evaluate`` writes as ``evaluate``."""
    current = _stage.get()
    if current is not None:
        yield current
        return
    token = _stage.set(name)
    try:
        yield name
    finally:
        _stage.reset(token)


def writes_as(stage: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator: the function's outputs are written as stage ``stage`` (see :func:`output_stage`)."""

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> T:
            with output_stage(stage):
                return fn(*args, **kwargs)

        return run

    return wrap


def refuse_symlink(path: str | Path) -> None:
    """A file about to be written must not be a symbolic link (writing would change or hide its target)."""
    path = Path(path)
    if path.is_symlink():
        raise RecipeError(
            f"refusing to write {path}: it is a symbolic link (to {os.readlink(path)})",
            hint="remove the link or choose another output folder; outputs are never written through links",
        )


def _read_marker(folder: Path) -> dict[str, str]:
    marker = folder / OUTPUT_MARKER
    refuse_symlink(marker)
    if not marker.exists():
        return {}
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        data = None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        raise RecipeError(
            f"{marker} is damaged, so it is unknown which files of {folder} this tool wrote",
            hint="choose a new output folder (or delete the marker if every file in the folder may be replaced)",
        )
    return {str(k): str(v) for k, v in files.items()}


def claim_outputs(folder: str | Path, names: Iterable[str], owner: str | None = None) -> Path:
    """Check, before any work, that the files ``names`` (relative to ``folder``) may be written, then record them as
    written by ``owner`` (default: the running :func:`output_stage`, else ``score``) in the folder's marker.

    Refused with a one-line error: a name that is a symbolic link; an existing file or folder the marker does not
    list (the command did not create it); one another command wrote (``score`` then ``evaluate`` into one folder
    would make ``report.html`` cite a replaced file). A file this command wrote before is replaced, as a rerun should.
    """
    folder = Path(folder)
    owner = f"plausibility {owner or _stage.get() or 'score'}"
    if folder.is_symlink() and not folder.exists():
        raise RecipeError(f"output folder {folder} is a broken symbolic link", hint="choose another --out folder")
    if folder.exists() and not folder.is_dir():
        raise RecipeError(f"output folder {folder} is a file, not a folder", hint="choose a folder path for --out")
    recorded = _read_marker(folder) if folder.is_dir() else {}
    names = list(names)
    for name in names:
        path = folder / name
        refuse_symlink(path)
        if not os.path.lexists(path):
            continue
        writer = recorded.get(name)
        if writer is None:
            raise RecipeError(
                f"refusing to replace {path}: it exists and was not written by {owner}",
                hint="choose a new --out folder; outputs never replace files this tool did not create",
            )
        if writer != owner:
            raise RecipeError(
                f"refusing to replace {path}: it was written by {writer}, not {owner}",
                hint=f"choose another --out folder for {owner}, so the outputs of {writer} stay consistent",
            )
    wanted = {**recorded, **{name: owner for name in names}}
    if wanted != recorded:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise RecipeError(f"cannot write to {folder}", hint="choose a writable --out folder")
        atomic_write_json(folder / OUTPUT_MARKER, {"format": 1, "files": dict(sorted(wanted.items()))})
    return folder


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring); the temporary file is removed on failure and
    the error names ``path``."""
    path = Path(path)
    refuse_symlink(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    with contextlib.suppress(OSError):
        tmp.unlink()  # a stale temporary file of a killed run with the same pid (never followed if it is a link)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if exc.filename and str(exc.filename) != str(tmp):
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[TextIO]:
    """A text file written piece by piece and put in place as a whole (as :func:`atomic_write_bytes`), for exports
    too large to build as one string: a failure or a kill leaves the previous file, never a partial one."""
    path = Path(path)
    refuse_symlink(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    with contextlib.suppress(OSError):
        tmp.unlink()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and not (exc.filename and str(exc.filename) != str(tmp)):
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def json_default(value: Any) -> Any:
    """JSON for numpy scalars/arrays, paths and anything else (as its string)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def atomic_write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=indent, default=json_default) + "\n")


def jsonl_text(rows: Iterable[Any]) -> str:
    return "".join(json.dumps(r, default=json_default) + "\n" for r in rows)


def atomic_write_jsonl(path: str | Path, rows: Iterable[Any]) -> Path:
    return atomic_write_text(path, jsonl_text(rows))


def append_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    """Append rows to a JSONL file and fsync, so a row that was appended survives a kill."""
    path = Path(path)
    refuse_symlink(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(jsonl_text(rows))
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Complete rows of a JSONL file, up to the first line cut short by a kill (everything before it is intact)."""
    path = Path(path)
    if not path.exists():
        return
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                return
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                return


# --------------------------------------------------------------------------------------------------------------------
# CSV exports

# A spreadsheet runs a cell that begins with one of these as a formula (=HYPERLINK(...), +cmd|..., -2+3, @SUM(...)).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")


def defuse_cell(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula gets a leading apostrophe (shown as text); numbers and other
    text are unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_text(frame: Any, index: bool = False, header: bool = True) -> str:
    """``frame.to_csv`` with every text cell, column name and index label defused (:func:`defuse_cell`): the one way
    a CSV is exported, since clip names, captions and model answers come from users' data."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    def textual(values: Any) -> bool:  # object columns and pandas' string dtypes; numbers are never touched
        return not (is_numeric_dtype(values.dtype) or is_bool_dtype(values.dtype))

    frame = frame.copy()
    for column in frame.columns:
        if textual(frame[column]):
            frame[column] = frame[column].map(defuse_cell)
    frame.columns = [defuse_cell(c) for c in frame.columns]
    if index and textual(frame.index):
        frame.index = frame.index.map(defuse_cell)
    return frame.to_csv(index=index, header=header)


def atomic_write_csv(path: str | Path, frame: Any, index: bool = False) -> Path:
    return atomic_write_text(path, csv_text(frame, index=index))


# --------------------------------------------------------------------------------------------------------------------
# names shown to the user


def printable(text: Any) -> str:
    """``text`` safe to print on one line: bytes of a non-UTF-8 file name as ``\\xNN``, and newlines, tabs and
    other control characters as escapes (so a file name can neither crash the output nor forge a summary line)."""
    text = str(text)
    if text.isprintable():
        return text
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def utf8_name(text: str) -> bool:
    """Whether ``text`` (a path as the OS gave it) is valid UTF-8, so it can be stored in JSON and CSV as is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --------------------------------------------------------------------------------------------------------------------
# secrets: never written, never printed
#
# Inputs are redacted where they are listed (ScoreConfig, tables' rows, the endpoint's address): the user name and
# password of a URL and the values of query parameters that carry credentials (tokens, signatures of presigned URLs)
# become ``***``. Everything after that point (rows, manifest, predictions, report, summary, the download cache's
# index) only ever sees the redacted text; the fetcher asks :func:`real_url` for the URL to request. Texts from the
# outside (a server's error body, an exception message) go through :func:`redact`, which also removes every secret
# registered so far (an API key read from the environment, the passwords of listed URLs).

REDACTED = "***"
SECRET_QUERY_KEY = re.compile(
    r"token|key|sig|signature|secret|passw|pwd|auth|credential|session|x-amz-security", re.IGNORECASE
)
_URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@?#]+@")
_secrets: set[str] = set()
_real_urls: dict[str, str] = {}
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember ``value`` (and its percent-decoded form) as a secret :func:`redact` removes from any text."""
    if not value or len(value) < 4 or value == REDACTED:  # shorter values would blank out ordinary words
        return
    with _secrets_lock:
        _secrets.update({value, urllib.parse.unquote(value)})


def redact_url(url: str) -> str:
    """``url`` without credentials: ``http://alice:s3cret@host/a.mp4?token=T&x=1`` -> ``http://***@host/a.mp4?token=***&x=1``.
    Anything that is not a URL with a scheme is returned as it is."""
    text = str(url)
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError:
        return _URL_USERINFO.sub(rf"\1{REDACTED}@", text)
    if len(parts.scheme) <= 1:  # a path (or a Windows drive letter)
        return text
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = "&".join(_redact_param(piece) for piece in parts.query.split("&")) if parts.query else ""
    if netloc == parts.netloc and query == parts.query:
        return text
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _redact_param(piece: str) -> str:
    name, eq, value = piece.partition("=")
    return f"{name}={REDACTED}" if eq and value and SECRET_QUERY_KEY.search(urllib.parse.unquote(name)) else piece


def _url_secrets(url: str) -> list[str]:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return []
    found = [parts.password or "", parts.username or ""] if "@" in parts.netloc else []
    for piece in parts.query.split("&"):
        name, eq, value = piece.partition("=")
        if eq and value and SECRET_QUERY_KEY.search(urllib.parse.unquote(name)):
            found.append(value)
    return found


def remember_url(url: str) -> str:
    """The redacted form of ``url`` (:func:`redact_url`), remembered so :func:`real_url` gives the URL back to the
    fetcher; its credentials are registered as secrets."""
    text = str(url)
    shown = redact_url(text)
    if shown != text:
        with _secrets_lock:
            _real_urls[shown] = text
        for secret in _url_secrets(text):
            register_secret(secret)
    return shown


def real_url(url: str) -> str:
    """The URL to request for a redacted one listed by :func:`remember_url` (the text itself otherwise)."""
    return _real_urls.get(str(url), str(url))


def redact(text: Any) -> str:
    """``text`` with every registered secret and every URL's user name and password replaced by ``***``."""
    out = str(text)
    if _secrets:
        with _secrets_lock:
            secrets = sorted(_secrets, key=len, reverse=True)
        for secret in secrets:
            if secret in out:
                out = out.replace(secret, REDACTED)
    return _URL_USERINFO.sub(rf"\1{REDACTED}@", out) if "@" in out else out


def redact_obj(value: Any) -> Any:
    """:func:`redact` applied to every text inside dicts, lists and tuples (keys included)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_obj(k): redact_obj(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_obj(v) for v in value]
    return value
