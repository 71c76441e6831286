"""VideoPhy-2 at full scale: load the labels, check them, bring every clip onto local disk, save a dataset folder.

``prepare_videophy2(VideoPhy2Config) -> VideoPhy2Result`` is what ``plausibility prepare videophy2`` and the notebooks
call. The source is one of

* a hub id, ``videophysics/videophy2_train`` (split ``train``) or ``videophysics/videophy2_test`` (split ``test``),
  read with :func:`datasets.load_dataset` (needs the Hugging Face hub; an unreachable hub is a clear error);
* a folder written by ``datasets.save_to_disk`` (a ``DatasetDict`` needs ``split``);
* a CSV, parquet or JSONL file with the same columns.

The output folder *is* a ``datasets`` folder (``save_to_disk``) whose ``video_url`` are absolute local paths — it can be
given as is to ``plausibility score``, :func:`recipe_lib.inference.scoring.score_videos` or the notebooks — plus
``prepare_report.json`` (the account of every dropped row) and, when downloading, ``failures.jsonl``.

What is an error and what is a counted skip
-------------------------------------------
Errors (nothing is written): the source cannot be found or read; a required column (``video_url``, ``pc``) is missing
(the message names it and the columns that are there); a ``--rename`` names a column that does not exist; no row is
left after checking.

Counted skips (the row is left out and listed in the report with its position and the reason), because one bad row in
thousands should not stop a run:

=====================  =============================================================================================
``missing_video_url``  the row has no ``video_url``
``missing_label``      ``pc`` is empty or NaN
``label_not_a_number`` ``pc`` is text that is not a number (``"high"``)
``label_out_of_range`` ``pc`` is a number but not a whole score 1-5 (``0``, ``7``, ``3.5``)
``duplicate``          the same ``video_url`` appeared in an earlier row (the first is kept; a different label is said)
``refused_url``        a URL with a scheme other than http(s) (``file://``, ``ftp://``)
``remote_offline``     an http(s) URL while downloads are off and no local copy was found
``download_failed``    the download failed after its retries (also in ``failures.jsonl``)
``video_not_found``    a local path that does not exist (the paths tried are listed)
``unreadable_video``   the file exists but is not a readable video (checked with ``--check-videos``, the default)
=====================  =============================================================================================

Task columns: ``sa`` (semantic adherence, the label of ``plausibility score --task sa``) is kept as a whole score 1-5;
a value that is not one (``7``, ``2.5``, ``high``) is cleared, not a reason to drop the row (``pc`` is the required
label), and listed under ``labels_cleared`` in the report. The rule columns (``physics_rules_followed``,
``physics_rules_unfollowed``, ``physics_rules_cannot_be_determined``: the labels of ``--task rule``) are stored as one
rule per line, whatever form the source gives them in (a list, a JSON list, or text).

Rows keep their position in the source (``source_row``, counted from 0) and the original URL (``source_url``), so
every output row can be traced back. Columns beyond the VideoPhy-2 ones (a generator's metadata, scene tags) are kept;
a written-out pandas index (``Unnamed: 0``) is not. A column whose values mix types (numbers and text) is stored as
text and named in the report.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import math
import re
import time
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import Any

from recipe_lib.config import build_dir, to_dict
from recipe_lib.data.accounting import DroppedRow, count_reasons, describe_dropped, replace_dir, write_json
from recipe_lib.data.download import (
    DEFAULT_DEADLINE,
    DEFAULT_MAX_BYTES,
    DownloadCache,
    DownloadConfig,
    download_all,
    is_remote,
)
from recipe_lib.data.splits import as_number, as_score
from recipe_lib.errors import DataError

VIDEOPHY2_COLUMNS = (
    "video_url",
    "caption",
    "upsampled_caption",
    "sa",
    "pc",
    "joint",
    "physics_rules_followed",
    "physics_rules_unfollowed",
    "physics_rules_cannot_be_determined",
    "human_violated_rules",
    "action",
    "category",
    "is_hard",
    "metadata_rules",
    "model_name",
)
REQUIRED_COLUMNS = ("video_url", "pc")
ADDED_COLUMNS = ("source_url", "source_row")
HUB_SPLITS = {"videophysics/videophy2_train": "train", "videophysics/videophy2_test": "test"}
REPORT_NAME = "prepare_report.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclasses.dataclass
class VideoPhy2Config:
    """Settings of :func:`prepare_videophy2`.

    ``videos_dir``: where clips already on disk live; a relative ``video_url`` is looked up there (as given, then by
    file name), and so is the file name of an http(s) URL when downloads are off. ``cache_dir``: the download cache
    (default ``build/cache/videos``); ``timeout`` bounds each wait for a server, ``download_deadline`` one clip's
    whole download (see :class:`~recipe_lib.data.download.DownloadConfig`). ``rename``: source column -> VideoPhy-2
    column (``{"videopath": "video_url"}``).
    """

    source: str
    out_dir: Path
    split: str | None = None
    download: bool = False
    videos_dir: Path | None = None
    cache_dir: Path | None = None
    workers: int = 4
    limit: int | None = None
    rename: dict[str, str] = dataclasses.field(default_factory=dict)
    check_videos: bool = True
    timeout: float = 30.0
    download_deadline: float | None = DEFAULT_DEADLINE
    retries: int = 3
    max_bytes: int | None = DEFAULT_MAX_BYTES
    progress: bool = True


@dataclasses.dataclass
class VideoPhy2Result:
    out_dir: Path
    source: str
    split: str | None
    n_input: int
    n_kept: int
    dropped: list[DroppedRow]
    label_counts: dict[int, int]
    columns: list[str]
    missing_optional: list[str]
    extra_columns: list[str]
    ignored_columns: list[str]
    converted_to_text: list[str]
    downloads: dict[str, Any] | None
    seconds: float
    sa_counts: dict[int, int] = dataclasses.field(default_factory=dict)
    cleared: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # labels cleared (row, column, value, why)

    @property
    def dataset_dir(self) -> Path:
        return self.out_dir

    @property
    def report_path(self) -> Path:
        return self.out_dir / REPORT_NAME

    def dropped_by_reason(self) -> dict[str, int]:
        return count_reasons(self.dropped)

    def dropped_frame(self):  # noqa: ANN201 - pandas.DataFrame
        from recipe_lib.data.accounting import dropped_frame

        return dropped_frame(self.dropped)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "split": self.split,
            "out_dir": str(self.out_dir),
            "rows_in_source": self.n_input,
            "rows_kept": self.n_kept,
            "rows_dropped": len(self.dropped),
            "dropped_by_reason": self.dropped_by_reason(),
            "label_counts": {str(k): v for k, v in self.label_counts.items()},
            "columns": self.columns,
            "missing_optional_columns": self.missing_optional,
            "extra_columns_kept": self.extra_columns,
            "ignored_columns": self.ignored_columns,
            "columns_converted_to_text": self.converted_to_text,
            "downloads": self.downloads,
            "sa_counts": {str(k): v for k, v in self.sa_counts.items()},
            "labels_cleared": list(self.cleared),
            "seconds": round(self.seconds, 3),
            "dropped_rows": [d.to_dict() for d in sorted(self.dropped, key=lambda d: d.row)],
        }

    def summary_lines(self, limit: int = 20) -> list[str]:
        lines = [
            f"{self.source}{f' [{self.split}]' if self.split else ''}: kept {self.n_kept} of {self.n_input} rows "
            f"-> {self.out_dir}",
            "labels (pc): " + ", ".join(f"{k}: {v}" for k, v in self.label_counts.items()),
        ]
        if self.sa_counts:
            lines.append("labels (sa): " + ", ".join(f"{k}: {v}" for k, v in self.sa_counts.items()))
        for c in self.cleared[:limit]:
            lines.append(f"  row {c['row']}: cleared {c['column']} {c['value']!r} ({c['reason']}); the row is kept")
        if self.downloads:
            d = self.downloads
            lines.append(
                f"downloads: {d['downloaded']} fetched, {d['cached']} from cache, {d['failed']} failed"
                + (f" (see {d['failures_file']})" if d["failed"] else "")
            )
        if self.missing_optional:
            lines.append("optional columns absent: " + ", ".join(self.missing_optional))
        if self.extra_columns:
            lines.append("extra columns kept: " + ", ".join(self.extra_columns))
        if self.ignored_columns:
            lines.append("columns ignored: " + ", ".join(self.ignored_columns))
        lines.extend(describe_dropped(self.dropped, limit))
        lines.append(f"report: {self.report_path}")
        return lines


# --------------------------------------------------------------------------------------------------------------------
# loading


def load_source(source: str, split: str | None = None) -> tuple[list[dict[str, Any]], str | None, Path]:
    """Rows of a hub id, dataset folder or table file; returns (rows, split used, folder relative paths start from)."""
    from recipe_lib.data.tables import TABLE_SUFFIXES, is_dataset_dir, load_rows

    path = Path(source).expanduser()
    if path.exists():
        if path.is_dir() and not is_dataset_dir(path):
            raise DataError(
                f"{path} is a folder but not a dataset saved with save_to_disk",
                hint="pass the folder written by datasets' save_to_disk, or a CSV/parquet/JSONL file",
            )
        if path.is_file() and path.suffix.lower() not in TABLE_SUFFIXES:
            raise DataError(f"unsupported source file {path}", hint=f"use one of {', '.join(TABLE_SUFFIXES)}")
        rows = load_rows(path, split=split)
        return rows, split, path if path.is_dir() else path.parent
    if _HUB_ID.match(source) and not source.startswith((".", "/")) and path.suffix.lower() not in TABLE_SUFFIXES:
        return _load_hub(source, split), split or HUB_SPLITS.get(source, "train"), Path.cwd()
    raise DataError(
        f"source not found: {source}",
        hint="give a hub id (videophysics/videophy2_train), a save_to_disk folder, or a CSV/parquet/JSONL file",
    )


def _load_hub(source: str, split: str | None) -> list[dict[str, Any]]:
    import datasets

    split = split or HUB_SPLITS.get(source, "train")
    try:
        ds = datasets.load_dataset(source, split=split)
    except Exception as exc:  # noqa: BLE001 - any hub/network failure becomes one actionable message
        first = (str(exc).splitlines() or [exc.__class__.__name__])[0][:300]
        folder = source.rsplit("/", 1)[-1]
        raise DataError(
            f"cannot load '{source}' (split '{split}') from the Hugging Face hub: {exc.__class__.__name__}: {first}",
            hint="the hub is unreachable from here (offline?). Where it is reachable, run "
            f"`python -c \"import datasets; datasets.load_dataset('{source}', split='{split}')"
            f".save_to_disk('{folder}')\"`, copy the folder over and pass --source {folder} "
            "(a CSV/parquet export works too)",
        ) from exc
    return [dict(r) for r in ds]


def _plain(value: Any) -> Any:
    """numpy scalars/arrays -> Python values, NaN -> None."""
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def check_columns(columns: list[str], source: str) -> None:
    """Raise :class:`DataError` naming the first missing required column (with a close match when there is one)."""
    import difflib

    for required in REQUIRED_COLUMNS:
        if required not in columns:
            close = difflib.get_close_matches(required, columns, n=1, cutoff=0.5)
            hint = (
                f"did you mean '{close[0]}'? pass --rename {close[0]}={required}"
                if close
                else (f"columns found: {', '.join(columns) or '(none)'}; map one with --rename SOURCE={required}")
            )
            raise DataError(f"{source} has no '{required}' column (required)", hint=hint)


def _uniform(values: list[Any]) -> tuple[list[Any], bool]:
    """Make one column storable by Arrow: mixed value types become text. Returns (values, converted)."""
    kinds = {type(v) for v in values if v is not None}
    if len(kinds) <= 1 or kinds <= {int, float}:
        return values, False
    if kinds <= {int, bool}:
        return [None if v is None else int(v) for v in values], False
    return [None if v is None else (v if isinstance(v, str) else json.dumps(v, default=str)) for v in values], True


# --------------------------------------------------------------------------------------------------------------------
# locating clips


def _basename(url: str) -> str:
    if is_remote(url):
        return PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    return PurePosixPath(url.replace("\\", "/")).name


def _local_candidates(url: str, base: Path, videos_dir: Path | None) -> list[Path]:
    path = Path(url).expanduser()
    if path.is_absolute():
        found = [path]
        if videos_dir is not None:
            found.append(videos_dir / path.name)
        return found
    found = [base / path]
    if videos_dir is not None:
        found += [videos_dir / path, videos_dir / _basename(url)]
    return list(dict.fromkeys(found))


def find_unreadable(paths: list[Path], workers: int) -> dict[Path, str]:
    """Probe every clip on ``workers`` threads; returns unreadable clip -> the reason (readable ones are absent)."""
    from recipe_lib.errors import VideoError
    from recipe_lib.video import probe

    def check(p: Path) -> str | None:
        try:
            probe(p)
        except VideoError as exc:
            return exc.message
        return None

    bad: dict[Path, str] = {}
    with cf.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for p, reason in zip(paths, pool.map(check, paths)):
            if reason:
                bad[p] = reason
    return bad


# --------------------------------------------------------------------------------------------------------------------
# the stage


def prepare_videophy2(cfg: VideoPhy2Config) -> VideoPhy2Result:
    """Load, check, localise and save VideoPhy-2 (see the module docstring)."""
    import datasets

    start = time.perf_counter()
    if cfg.limit is not None and cfg.limit < 1:
        raise DataError(f"limit must be at least 1, got {cfg.limit}")
    videos_dir = Path(cfg.videos_dir).expanduser() if cfg.videos_dir else None
    if videos_dir is not None and not videos_dir.is_dir():
        raise DataError(f"videos folder not found: {videos_dir}")
    raw, split, base = load_source(cfg.source, cfg.split)
    if cfg.limit is not None:
        raw = raw[: cfg.limit]
    if not raw:
        raise DataError(f"{cfg.source} has no rows")
    columns = list(dict.fromkeys(k for r in raw for k in r))
    for src, dst in cfg.rename.items():
        if src not in columns:
            raise DataError(
                f"cannot rename '{src}': {cfg.source} has no such column", hint=f"columns: {', '.join(columns)}"
            )
        if dst not in VIDEOPHY2_COLUMNS:
            raise DataError(
                f"cannot rename '{src}' to '{dst}': not a VideoPhy-2 column",
                hint=f"VideoPhy-2 columns: {', '.join(VIDEOPHY2_COLUMNS)}",
            )
    rows = [{cfg.rename.get(k, k): _plain(v) for k, v in r.items()} for r in raw]
    columns = [cfg.rename.get(c, c) for c in columns]
    check_columns(columns, cfg.source)
    known = [c for c in VIDEOPHY2_COLUMNS if c in columns]
    # Other columns travel along (generator metadata, scene tags ...), except a written-out pandas index and names
    # this stage adds itself.
    ignored = [c for c in columns if c not in VIDEOPHY2_COLUMNS and (c.startswith("Unnamed: ") or c in ADDED_COLUMNS)]
    extra = [c for c in columns if c not in VIDEOPHY2_COLUMNS and c not in ignored]
    missing_optional = [c for c in VIDEOPHY2_COLUMNS if c not in columns]

    dropped: list[DroppedRow] = []
    kept: list[tuple[int, dict[str, Any]]] = []
    first_seen: dict[str, tuple[int, Any]] = {}
    for i, row in enumerate(rows):
        url = row.get("video_url")
        url = str(url).strip() if url is not None else ""
        label = row.get("pc")
        if not url:
            dropped.append(DroppedRow(i, "missing_video_url", "the row has no video_url", None, label))
            continue
        score = as_score(label)
        if score is None:
            if label is None or (isinstance(label, str) and not label.strip()):
                dropped.append(DroppedRow(i, "missing_label", "pc is empty", url, label))
            elif _is_number(label):
                dropped.append(
                    DroppedRow(i, "label_out_of_range", f"pc {label!r} is not a whole score 1-5", url, label)
                )
            else:
                dropped.append(DroppedRow(i, "label_not_a_number", f"pc {label!r} is not a number", url, label))
            continue
        if url in first_seen:
            j, other = first_seen[url]
            note = "" if other == score else f" with a different label ({other} there, {score} here)"
            dropped.append(
                DroppedRow(i, "duplicate", f"same video_url as row {j}{note}; the first is kept", url, label)
            )
            continue
        first_seen[url] = (i, score)
        kept.append((i, {**row, "video_url": url, "pc": score}))

    # Where each clip is on disk.
    cache_dir = Path(cfg.cache_dir or build_dir() / "cache" / "videos")
    cache = DownloadCache(cache_dir)
    local: dict[int, Path] = {}
    remote: dict[int, str] = {}
    for i, row in kept:
        url = row["video_url"]
        if is_remote(url):
            scheme = urllib.parse.urlsplit(url).scheme.lower()
            if scheme not in ("http", "https"):
                shown = f"{scheme}://" if url.lower().startswith(f"{scheme}://") else f"{scheme}:"
                dropped.append(
                    DroppedRow(i, "refused_url", f"'{shown}' URLs are not fetched (http/https only)", url, row["pc"])
                )
            elif cfg.download:
                remote[i] = url
            else:
                hit = cache.lookup(url, verify=False) if cache.index_path.exists() else None
                if hit is None and videos_dir is not None and (videos_dir / _basename(url)).is_file():
                    hit = videos_dir / _basename(url)
                if hit is not None:
                    local[i] = hit
                else:
                    where = f" or in {videos_dir}" if videos_dir else ""
                    dropped.append(
                        DroppedRow(
                            i,
                            "remote_offline",
                            f"remote URL and downloads are off; no copy in the cache{where} (use --download)",
                            url,
                            row["pc"],
                        )
                    )
        else:
            tried = _local_candidates(url, base, videos_dir)
            found = next((p for p in tried if p.is_file()), None)
            if found is None:
                dropped.append(
                    DroppedRow(i, "video_not_found", "no file at " + " or ".join(map(str, tried)), url, row["pc"])
                )
            else:
                local[i] = found
    downloads = None
    if remote:
        result = download_all(
            list(remote.values()),
            DownloadConfig(
                cache_dir=cache_dir,
                workers=cfg.workers,
                timeout=cfg.timeout,
                deadline=cfg.download_deadline,
                retries=cfg.retries,
                max_bytes=cfg.max_bytes,
                progress=cfg.progress,
            ),
        )
        downloads = result.summary()
        for i, url in remote.items():
            if url in result.files:
                local[i] = result.files[url]
            else:
                dropped.append(
                    DroppedRow(i, "download_failed", result.failures.get(url, "unknown error"), url, rows[i].get("pc"))
                )
    if cfg.check_videos and local:
        unique = sorted({p.resolve() for p in local.values()})
        bad = find_unreadable(unique, cfg.workers)
        for i in [i for i, p in local.items() if p.resolve() in bad]:
            dropped.append(
                DroppedRow(i, "unreadable_video", bad[local[i].resolve()], rows[i].get("video_url"), rows[i].get("pc"))
            )
            del local[i]

    final = [(i, row) for i, row in kept if i in local]
    final, cleared = _task_columns(final)
    if not final:
        reasons = ", ".join(f"{n} {r}" for r, n in count_reasons(dropped).items())
        first = sorted(dropped, key=lambda d: d.row)[0]
        raise DataError(
            f"no usable rows in {cfg.source}: all {len(rows)} were dropped ({reasons}); "
            f"e.g. row {first.row}: {first.detail}",
            hint="pass --download for remote URLs, --videos-dir for clips on disk, or fix the labels",
        )
    records: dict[str, list[Any]] = {
        "video_url": [str(local[i].resolve()) for i, _ in final],
        "pc": [row["pc"] for _, row in final],
    }
    converted: list[str] = []
    for column in known + extra:
        if column in ("video_url", "pc"):
            continue
        values, changed = _uniform([row.get(column) for _, row in final])
        records[column] = values
        if changed:
            converted.append(column)
    records["source_url"] = [row["video_url"] for _, row in final]
    records["source_row"] = [i for i, _ in final]
    for column in list(records):
        try:
            datasets.Dataset.from_dict({column: records[column]})
        except (ValueError, TypeError, ArithmeticError) as exc:  # pyarrow.ArrowInvalid is a ValueError
            if column in ("video_url", "pc", "source_url", "source_row"):
                raise DataError(f"cannot store column '{column}': {exc}") from exc
            records[column] = [None if v is None else json.dumps(v, default=str) for v in records[column]]
            converted.append(column)
    ds = datasets.Dataset.from_dict(records)
    label_counts = {k: v for k, v in sorted(_count(records["pc"]).items())}
    sa_counts = {k: v for k, v in sorted(_count([v for v in records.get("sa", []) if v is not None]).items())}
    out = VideoPhy2Result(
        out_dir=Path(cfg.out_dir),
        source=cfg.source,
        split=split,
        n_input=len(rows),
        n_kept=len(final),
        dropped=dropped,
        label_counts=label_counts,
        columns=list(records),
        missing_optional=missing_optional,
        extra_columns=extra,
        ignored_columns=ignored,
        converted_to_text=converted,
        downloads=downloads,
        seconds=0.0,
        sa_counts=sa_counts,
        cleared=cleared,
    )

    def build(tmp: Path) -> None:
        ds.save_to_disk(str(tmp))
        out.seconds = time.perf_counter() - start
        write_json(tmp / REPORT_NAME, {**out.to_dict(), "settings": to_dict(cfg)})
        if downloads is not None:
            import shutil

            shutil.copyfile(downloads["failures_file"], tmp / "failures.jsonl")

    replace_dir(Path(cfg.out_dir), build, REPORT_NAME)
    return out


def _task_columns(rows: list[tuple[int, dict[str, Any]]]) -> tuple[list[tuple[int, dict[str, Any]]], list[dict]]:
    """``sa`` as a whole score 1-5 (other values cleared and listed) and the rule columns as one rule per line."""
    from recipe_lib.tasks import RULE_COLUMNS, parse_rules

    cleared: list[dict[str, Any]] = []
    out = []
    for i, row in rows:
        row = dict(row)
        if "sa" in row and row["sa"] is not None and not (isinstance(row["sa"], str) and not row["sa"].strip()):
            score = as_score(row["sa"])
            if score is None:
                what = "not a whole score 1-5" if _is_number(row["sa"]) else "not a number"
                cleared.append({"row": i, "column": "sa", "value": row["sa"], "reason": what})
            row["sa"] = score
        elif "sa" in row:
            row["sa"] = None
        for column in RULE_COLUMNS:
            if column in row:
                row[column] = "\n".join(parse_rules(row[column]))
        out.append((i, row))
    return out, cleared


def _is_number(value: Any) -> bool:
    return as_number(value) is not None


def _count(values: list[int]) -> dict[int, int]:
    from collections import Counter

    return dict(Counter(values))


def load_report(out_dir: str | Path) -> dict[str, Any]:
    """The ``prepare_report.json`` of a prepared folder."""
    path = Path(out_dir) / REPORT_NAME
    if not path.exists():
        raise DataError(f"no {REPORT_NAME} in {out_dir}", hint="run `plausibility prepare videophy2` first")
    return json.loads(path.read_text(encoding="utf-8"))
