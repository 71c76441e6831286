"""A team's own labelled videos: a sheet of links and scores plus a folder of clips -> train/eval datasets.

``prepare_custom(CustomDataConfig) -> CustomDataResult`` is what ``plausibility prepare custom`` and notebook 05 call.

Input
    * a label sheet: ``.xlsx`` (the named sheet or the first; other sheets are listed and ignored) or ``.csv``, with a
      link column (default ``output_link``) and a label column (default ``Physical common sense``). The header row is
      the first of the top rows that holds the link column, so a row of merged group titles above it is skipped and
      said so; a merged cell *in* the header over the link or label column is an error naming the cells.
    * a videos folder; each link is turned into a file name inside it by one rule, chosen without editing code:

      - default: the last part of the link's URL path, URL-decoded
        (``https://host/renders/a%2Cb.mp4`` -> ``a,b.mp4``);
      - ``link_pattern``: a regular expression with a named group ``name``, searched in the link
        (``r"renders/(?P<name>[^?]+)"``);
      - ``link_template``: a format string over the link's parts ``{name}`` (file name), ``{stem}``, ``{suffix}``
        (``.mp4``), ``{ext}`` (``mp4``), ``{path}`` (URL path without the leading ``/``), ``{parent}``, ``{host}``,
        ``{row}`` (sheet row), e.g. ``"{stem}.mp4"`` or ``"{parent}/{name}"``.

      The resolved file must stay inside the videos folder: absolute paths, ``..`` and symlinks pointing outside are
      refused (and reported), never followed.
    * optionally a prompts folder: ``<stem>.txt`` (or ``<stem>_prompt.txt``, the seed recipe's naming) named after a
      video's file stem becomes its caption; without one, ``caption_column`` of the sheet is used (else empty, counted
      in ``missing_prompts``).

Labels
    Without ``scale_labels`` a label must be a whole score 1-5. With it, labels are mapped from ``label_range`` (default
    0-1, i.e. binary 0/1 -> 1/5) onto 1-5 by :func:`recipe_lib.data.splits.scale_labels` (linear, rounded half up).
    A value outside the range is a dropped row; binary labels without ``scale_labels`` are an error with a hint.

Output (``out_dir``)
    ``train/`` and ``eval/`` (``save_to_disk``; columns ``video_url`` (absolute path), ``pc``, ``caption``, ``link``,
    ``sheet_row``, ``raw_label``, ``video_name``), ``split_info.json`` (counts before/after, every dropped row with its
    reason, label counts, the split and balance reports, settings) and ``dropped_rows.csv`` (the same rows, for a
    spreadsheet). The split is stratified by label (a label with a single clip cannot be in both parts: it stays in
    train, and the report says so); balancing (``balance_labels``) is applied to the train split only, so evaluation
    keeps the real label distribution and never shares a clip with training.

Rows are numbered as the spreadsheet shows them (the header is row 1 unless title rows sit above it).

Drop reasons: ``empty_row``, ``missing_link``, ``link_no_match`` (the pattern/template found no name),
``unsafe_path`` (escapes the videos folder), ``video_not_found``, ``unreadable_video``, ``missing_label``,
``label_not_a_number``, ``label_out_of_range``, ``duplicate_video`` (a second row for the same file; the first is kept).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import string
import time
import urllib.parse
from collections import Counter
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from recipe_lib.config import to_dict
from recipe_lib.data.accounting import DroppedRow, count_reasons, describe_dropped, replace_dir, write_json
from recipe_lib.data.splits import (
    BalanceReport,
    SplitReport,
    as_number,
    balance_labels,
    scale_labels,
    split_report,
    stratified_split,
)
from recipe_lib.errors import ConfigError, DataError

SPLIT_INFO = "split_info.json"
TEMPLATE_FIELDS = ("name", "stem", "suffix", "ext", "path", "parent", "host", "row")
HEADER_SEARCH_ROWS = 10
BALANCE_NOTE = "balancing applies to the train split only; eval keeps the real label distribution"


@dataclasses.dataclass
class CustomDataConfig:
    """Settings of :func:`prepare_custom` (see the module docstring)."""

    sheet: Path
    videos_dir: Path
    out_dir: Path
    link_column: str = "output_link"
    label_column: str = "Physical common sense"
    sheet_name: str | None = None
    link_pattern: str | None = None
    link_template: str | None = None
    prompts_dir: Path | None = None
    caption_column: str | None = None
    scale_labels: bool = False
    label_range: tuple[float, float] | None = None
    balance_labels: bool = False
    eval_size: float = 0.1
    seed: int = 42
    check_videos: bool = True


# --------------------------------------------------------------------------------------------------------------------
# link -> file


class LinkRule:
    """Turns a link into a file name relative to the videos folder (basename, regex or template; see module doc)."""

    def __init__(self, pattern: str | None = None, template: str | None = None) -> None:
        if pattern and template:
            raise ConfigError("give either a link pattern or a link template, not both")
        self.pattern = pattern
        self.template = template
        self._regex: re.Pattern[str] | None = None
        if pattern:
            try:
                self._regex = re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"link pattern {pattern!r} is not a valid regular expression: {exc}") from exc
            if "name" not in self._regex.groupindex:
                raise ConfigError(
                    f"link pattern {pattern!r} has no named group 'name'",
                    hint=r"mark the file name part with (?P<name>...), e.g. 'renders/(?P<name>[^/?]+)'",
                )
        if template:
            try:
                fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
            except ValueError as exc:
                raise ConfigError(f"link template {template!r} is malformed: {exc}") from exc
            unknown = [f for f in fields if f not in TEMPLATE_FIELDS]
            if unknown or not fields:
                raise ConfigError(
                    f"link template {template!r} uses unknown field(s) {unknown}"
                    if unknown
                    else f"link template {template!r} uses no field",
                    hint="fields: " + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS),
                )

    def describe(self) -> str:
        if self.pattern:
            return f"regex {self.pattern!r} (group 'name')"
        if self.template:
            return f"template {self.template!r}"
        return "file name of the link's URL path (URL-decoded)"

    @staticmethod
    def parts(link: str, row: int = 0) -> dict[str, Any]:
        """The template fields of a link."""
        split = urllib.parse.urlsplit(link)
        if len(split.scheme) > 1:
            # The file name is the last segment of the URL path, decoded after splitting: an encoded '/' (%2F)
            # stays part of the name (and is then refused as a path), it never silently selects another file.
            segments = split.path.split("/")
            name = urllib.parse.unquote(segments[-1])
            path = urllib.parse.unquote(split.path).lstrip("/")
            host = split.netloc
        else:  # a plain path (possibly Windows style), used as written
            path = link.replace("\\", "/").lstrip("/")
            name, host = PurePosixPath(path).name, ""
        p = PurePosixPath(path)
        stem, suffix = (name.rsplit(".", 1)[0], "." + name.rsplit(".", 1)[1]) if "." in name.strip(".") else (name, "")
        return {
            "name": name,
            "stem": stem,
            "suffix": suffix,
            "ext": suffix.lstrip("."),
            "path": path,
            "parent": "" if str(p.parent) == "." else str(p.parent),
            "host": host,
            "row": row,
        }

    def name_for(self, link: str, row: int = 0) -> str:
        """The relative file name for ``link``; raises :class:`ValueError` with a reason when there is none."""
        if self._regex is not None:
            m = self._regex.search(link)
            if not m or not m.group("name"):
                raise ValueError(f"link does not match the pattern {self.pattern!r}")
            return urllib.parse.unquote(m.group("name"))
        parts = self.parts(link, row)
        if self.template:
            return self.template.format(**parts)
        if not parts["name"]:
            raise ValueError("the link has no file name at the end of its path")
        return parts["name"]


def resolve_inside(folder: Path, relative: str) -> Path:
    """``folder/relative`` if it stays inside ``folder`` (symlinks followed); raises :class:`PermissionError`
    naming why not. The file need not exist."""
    rel = relative.replace("\\", "/")
    if PurePosixPath(rel).is_absolute() or PureWindowsPath(relative).drive or rel.startswith("~"):
        raise PermissionError(f"'{relative}' is an absolute path; only names inside the videos folder are used")
    if ".." in PurePosixPath(rel).parts:
        raise PermissionError(f"'{relative}' climbs out of the videos folder with '..'")
    root = Path(os.path.realpath(folder))
    target = folder / rel
    real = Path(os.path.realpath(target))
    if not real.is_relative_to(root):
        raise PermissionError(f"'{relative}' is a symlink to {real}, outside the videos folder")
    return target


# --------------------------------------------------------------------------------------------------------------------
# reading the sheet


@dataclasses.dataclass
class SheetTable:
    """The data rows of a label sheet as text-keyed dicts, with where they came from."""

    rows: list[tuple[int, dict[str, Any]]]  # (spreadsheet row number, cells)
    columns: list[str]
    sheet: str | None
    other_sheets: list[str]
    header_row: int
    notes: list[str]
    trailing_empty: int

    def frame(self):  # noqa: ANN201 - pandas.DataFrame
        """The data rows as a table, indexed by spreadsheet row number."""
        import pandas as pd

        index = pd.Index([r for r, _ in self.rows], name="sheet row")
        return pd.DataFrame([cells for _, cells in self.rows], columns=self.columns, index=index)


def _cell_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def _find_column(columns: list[str], wanted: str, what: str, where: str) -> str:
    if wanted in columns:
        return wanted
    folded = [c for c in columns if c.casefold().split() == wanted.casefold().split()]
    if len(folded) == 1:
        return folded[0]
    close = difflib.get_close_matches(wanted, columns, n=1, cutoff=0.6)
    option = f"--{what}-column (or {what}_column= in a notebook)"
    hint = f"did you mean '{close[0]}'? pass it with {option}" if close else f"name the column with {option}"
    raise DataError(
        f"{where} has no {what} column '{wanted}'; its columns are: {', '.join(repr(c) for c in columns if c)}",
        hint=hint,
    )


def _merged_ranges(path: Path, sheet: str) -> list[tuple[int, int, int, int, str]]:
    """Merged cell ranges of a sheet as (min_row, min_col, max_row, max_col, text), 1-based."""
    import openpyxl

    wb = openpyxl.load_workbook(path, read_only=False, data_only=True)
    try:
        ws = wb[sheet]
        out = []
        for rng in ws.merged_cells.ranges:
            value = ws.cell(rng.min_row, rng.min_col).value
            out.append((rng.min_row, rng.min_col, rng.max_row, rng.max_col, _cell_text(value)))
        return out
    finally:
        wb.close()


def _col_letter(index: int) -> str:
    from openpyxl.utils import get_column_letter

    return get_column_letter(index)


def read_sheet(path: str | Path, link_column: str, label_column: str, sheet_name: str | None = None) -> SheetTable:
    """Read an .xlsx or .csv label sheet (see the module docstring for the header and merged-cell rules)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"label sheet not found: {path}")
    suffix = path.suffix.lower()
    notes: list[str] = []
    sheet: str | None = None
    other: list[str] = []
    merged: list[tuple[int, int, int, int, str]] = []
    if suffix in (".xlsx", ".xlsm"):
        try:
            book = pd.ExcelFile(path, engine="openpyxl")
        except Exception as exc:  # noqa: BLE001 - zipfile/openpyxl raise many kinds for a damaged file
            raise DataError(f"cannot open {path} as an Excel workbook: {exc}", hint="save it again as .xlsx") from exc
        names = [str(n) for n in book.sheet_names]
        if sheet_name is not None:
            if sheet_name not in names:
                raise DataError(f"{path.name} has no sheet '{sheet_name}'", hint=f"sheets: {', '.join(names)}")
            sheet = sheet_name
        else:
            sheet = names[0]
        other = [n for n in names if n != sheet]
        if other:
            notes.append(f"read sheet '{sheet}'; ignored the other sheet(s): {', '.join(other)}")
        raw = pd.read_excel(book, sheet_name=sheet, header=None, dtype=object)
        book.close()
        merged = _merged_ranges(path, sheet)
        where = f"sheet '{sheet}' of {path.name}"
    elif suffix == ".csv":
        raw = None
        for encoding in ("utf-8-sig", "cp1252"):
            try:
                raw = pd.read_csv(path, header=None, dtype=object, encoding=encoding, skip_blank_lines=False)
                break
            except UnicodeDecodeError:
                continue
            except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
                raise DataError(f"cannot read {path} as CSV: {exc}") from exc
        if raw is None:
            raise DataError(f"cannot decode {path}", hint="save it as UTF-8 CSV")
        first = [_cell_text(v) for v in raw.iloc[0]] if len(raw) else []
        if len(first) == 1 and ";" in first[0]:
            raw = pd.read_csv(path, header=None, dtype=object, sep=";", skip_blank_lines=False, encoding="utf-8-sig")
            notes.append("the CSV uses ';' between columns")
        where = path.name
    elif suffix == ".xls":
        raise DataError(f"{path.name} is an old-style .xls workbook", hint="save it as .xlsx (or CSV) and retry")
    else:
        raise DataError(f"unsupported label sheet {path.name}", hint="use an .xlsx workbook or a .csv file")

    if raw.empty:
        raise DataError(f"{where} is empty")
    cells = [[_cell_text(v) for v in row] for row in raw.itertuples(index=False)]
    header_idx = None
    for i, row in enumerate(cells[:HEADER_SEARCH_ROWS]):
        if any(c == link_column or c.casefold().split() == link_column.casefold().split() for c in row):
            header_idx = i
            break
    if header_idx is None:
        first_row = next((r for r in cells if any(r)), [])
        merged_top = [m for m in merged if m[0] <= 2 and m[3] > m[1]]
        extra = ""
        if merged_top:
            m = merged_top[0]
            extra = (
                f"; the header has merged cells ({_col_letter(m[1])}{m[0]}:{_col_letter(m[3])}{m[2]} "
                f"'{m[4]}') - give every column its own header cell"
            )
        try:
            _find_column([c for c in first_row if c], link_column, "link", where)  # raises naming the columns
        except DataError as exc:
            if other:
                exc.hint = f"{exc.hint}; the workbook also has sheet(s) {', '.join(other)} (pick one with --sheet-name)"
            exc.message += extra
            raise
        raise DataError(f"{where}: no header row with '{link_column}' in the first {HEADER_SEARCH_ROWS} rows{extra}")
    header_row = header_idx + 1
    if header_idx:
        notes.append(f"the header is on row {header_row}; the {header_idx} row(s) above it (titles) were skipped")
    columns = cells[header_idx]
    link = _find_column(columns, link_column, "link", where)
    label = _find_column(columns, label_column, "label", where)
    for name in (link, label):
        col = columns.index(name) + 1
        for m in merged:
            if m[0] <= header_row <= m[2] and m[1] <= col <= m[3] and m[3] > m[1]:
                raise DataError(
                    f"{where}: header cells {_col_letter(m[1])}{m[0]}:{_col_letter(m[3])}{m[2]} are merged "
                    f"('{m[4]}'), so it is unclear which column holds '{name}'",
                    hint="unmerge the header cells and give every column its own name",
                )
    dupes = sorted({c for c in columns if c and columns.count(c) > 1})
    if dupes:
        raise DataError(f"{where}: column name(s) {dupes} appear more than once", hint="rename the copies")
    if link != link_column or label != label_column:
        notes.append(f"matched columns ignoring case/spaces: '{link}', '{label}'")
    keys = [c if c else f"column {_col_letter(j + 1)}" for j, c in enumerate(columns)]
    data = cells[header_idx + 1 :]
    raw_data = raw.iloc[header_idx + 1 :]
    trailing = 0
    while data and not any(data[-1]):
        data.pop()
        trailing += 1
    rows = []
    for offset, (texts, values) in enumerate(zip(data, raw_data.itertuples(index=False))):
        row_values = {k: (None if t == "" else v) for k, t, v in zip(keys, texts, values)}
        rows.append((header_row + 1 + offset, row_values))
    return SheetTable(rows, keys, sheet, other, header_row, notes, trailing)


# --------------------------------------------------------------------------------------------------------------------
# the stage


@dataclasses.dataclass
class CustomDataResult:
    out_dir: Path
    n_rows: int
    n_matched: int
    n_used: int
    dropped: list[DroppedRow]
    raw_label_counts: dict[str, int]
    label_counts: dict[int, int]
    split: SplitReport
    balance: BalanceReport | None
    train_size: int
    eval_size: int
    missing_prompts: list[str]
    videos_without_rows: list[str]
    notes: list[str]
    train_label_counts: dict[int, int] = dataclasses.field(default_factory=dict)
    eval_label_counts: dict[int, int] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    @property
    def train_dir(self) -> Path:
        return self.out_dir / "train"

    @property
    def eval_dir(self) -> Path:
        return self.out_dir / "eval"

    @property
    def split_info_path(self) -> Path:
        return self.out_dir / SPLIT_INFO

    def dropped_by_reason(self) -> dict[str, int]:
        return count_reasons(self.dropped)

    def dropped_frame(self):  # noqa: ANN201 - pandas.DataFrame
        from recipe_lib.data.accounting import dropped_frame

        return dropped_frame(self.dropped).rename(columns={"row": "sheet_row", "video_url": "link"})

    def balance_frame(self):  # noqa: ANN201 - pandas.DataFrame
        """Train label counts before and after balancing (after = before when balancing was off)."""
        import pandas as pd

        if self.balance is not None:
            return self.balance.frame()
        before = self.split.counts["train"]
        return pd.DataFrame({"before": before, "after": before}).rename_axis("pc")

    def counts(self) -> dict[str, int]:
        return {
            "rows_in_sheet": self.n_rows,
            "matched_to_video": self.n_matched,
            "used": self.n_used,
            "dropped": len(self.dropped),
            "train_before_balance": self.split.sizes["train"],
            "train": self.train_size,
            "eval": self.eval_size,
        }

    def summary_lines(self, limit: int = 30) -> list[str]:
        lines = [
            f"{self.n_rows} sheet rows: {self.n_matched} matched to a video, {self.n_used} used, "
            f"{len(self.dropped)} dropped",
            "labels (pc): " + ", ".join(f"{k}: {v}" for k, v in self.label_counts.items()),
            f"split: train {self.split.sizes['train']}, eval {self.eval_size}",
        ]
        if self.balance is not None:
            lines.append(f"balanced train: {self.train_size} rows, {self.balance.target} per label ({BALANCE_NOTE})")
        lines += self.notes
        if self.missing_prompts:
            lines.append(f"{len(self.missing_prompts)} video(s) have no prompt file (caption left empty)")
        if self.videos_without_rows:
            lines.append(f"{len(self.videos_without_rows)} video(s) in the folder have no row in the sheet")
        lines.extend(describe_dropped(self.dropped, limit))
        lines.append(f"output: {self.train_dir}, {self.eval_dir}, {self.split_info_path}")
        return lines


def _prompt_for(prompts_dir: Path, stem: str) -> str | None:
    for name in (f"{stem}.txt", f"{stem}_prompt.txt"):
        p = prompts_dir / name
        if p.is_file():
            return p.read_text(encoding="utf-8", errors="replace").strip()
    return None


def _check_label_range(cfg: CustomDataConfig) -> tuple[float, float]:
    if not cfg.scale_labels:
        if cfg.label_range is not None:
            raise ConfigError("a label range only applies with scale_labels", hint="add --scale-labels")
        return (1, 5)
    low, high = cfg.label_range if cfg.label_range is not None else (0, 1)
    if not low < high:
        raise ConfigError(f"label range must have min < max, got {low}..{high}")
    return (low, high)


def _split(ds: Any, eval_size: float, seed: int) -> tuple[Any, Any, list[str]]:
    """Stratified split; a label with a single clip cannot be in both parts, so it goes to train (and is noted)."""
    import datasets

    labels = list(ds["pc"])
    counts = Counter(labels)
    rare = sorted(k for k, n in counts.items() if n < 2)
    if not rare:
        return (*stratified_split(ds, eval_size=eval_size, seed=seed, label_column="pc"), [])
    common = [i for i, v in enumerate(labels) if v not in rare]
    if not common:
        raise DataError(
            f"too few clips to split: every label has a single clip ({len(labels)} in all)",
            hint="label more clips; each label needs at least 2 to appear in both train and eval",
        )
    train, evaluation = stratified_split(ds.select(common), eval_size=eval_size, seed=seed, label_column="pc")
    alone = ds.select([i for i, v in enumerate(labels) if v in rare])
    note = f"label(s) {rare} have a single clip each: kept in train only, so eval has no example of them"
    return datasets.concatenate_datasets([train, alone]), evaluation, [note]


def prepare_custom(cfg: CustomDataConfig) -> CustomDataResult:
    """Match, check, scale, split (and balance the train split of) a team's labelled videos; see module docstring."""
    import datasets

    start = time.perf_counter()
    low, high = _check_label_range(cfg)
    rule = LinkRule(cfg.link_pattern, cfg.link_template)
    videos_dir = Path(cfg.videos_dir).expanduser()
    if not videos_dir.is_dir():
        raise DataError(f"videos folder not found: {videos_dir}")
    prompts_dir = Path(cfg.prompts_dir).expanduser() if cfg.prompts_dir else None
    if prompts_dir is not None and not prompts_dir.is_dir():
        raise DataError(f"prompts folder not found: {prompts_dir}")
    table = read_sheet(cfg.sheet, cfg.link_column, cfg.label_column, cfg.sheet_name)
    link_key = _find_column(table.columns, cfg.link_column, "link", str(cfg.sheet))
    label_key = _find_column(table.columns, cfg.label_column, "label", str(cfg.sheet))
    caption_key = (
        _find_column(table.columns, cfg.caption_column, "caption", str(cfg.sheet)) if cfg.caption_column else None
    )

    dropped: list[DroppedRow] = []
    candidates: list[dict[str, Any]] = []
    first_for_file: dict[str, int] = {}
    referenced: set[str] = set()
    n_matched = 0
    for row_no, cells in table.rows:
        if all(v is None for v in cells.values()):
            dropped.append(DroppedRow(row_no, "empty_row", "the row is empty"))
            continue
        link = _cell_text(cells.get(link_key))
        raw_label = cells.get(label_key)
        problems: list[tuple[str, str]] = []
        video: Path | None = None
        if not link:
            problems.append(("missing_link", f"no link in '{link_key}'"))
        else:
            try:
                rel = rule.name_for(link, row_no)
                video = resolve_inside(videos_dir, rel)
                if not video.is_file():
                    problems.append(("video_not_found", f"no video '{rel}' in {videos_dir}"))
                    video = None
            except ValueError as exc:
                problems.append(("link_no_match", str(exc)))
            except PermissionError as exc:
                problems.append(("unsafe_path", f"refused: {exc}"))
        if video is not None:
            n_matched += 1
            referenced.add(os.path.realpath(video))
        number = as_number(raw_label)
        if raw_label is None:
            problems.append(("missing_label", f"no label in '{label_key}'"))
        elif number is None:
            problems.append(("label_not_a_number", f"label {raw_label!r} is not a number"))
        elif not low <= number <= high or (not cfg.scale_labels and number != int(number)):
            what = "a whole score 1-5" if not cfg.scale_labels else f"inside the declared range {low:g}-{high:g}"
            problems.append(("label_out_of_range", f"label {raw_label!r} is not {what}"))
        if video is not None and not problems:
            key = os.path.realpath(video)
            if key in first_for_file:
                problems.append(("duplicate_video", f"same video as row {first_for_file[key]}; the first is kept"))
            else:
                first_for_file[key] = row_no
        if problems:
            dropped.append(
                DroppedRow(row_no, problems[0][0], "; ".join(d for _, d in problems), link or None, raw_label)
            )
            continue
        candidates.append(
            {
                "row": row_no,
                "link": link,
                "video": video,
                "label": number,
                "caption_cell": _cell_text(cells.get(caption_key)) if caption_key else "",
            }
        )

    numbers = [c["label"] for c in candidates]
    out_of_range = sum(1 for d in dropped if d.reason == "label_out_of_range")
    if not cfg.scale_labels and (numbers or out_of_range):
        all_numbers = numbers + [as_number(d.label) for d in dropped if d.reason == "label_out_of_range"]
        binary = sum(1 for x in all_numbers if x in (0.0, 1.0))
        if all_numbers and 0.0 in all_numbers and binary >= 0.9 * len(all_numbers):
            raise DataError(
                f"the labels in '{label_key}' are binary (0/1), but the critic's scale is 1-5",
                hint="add --scale-labels to map 0 -> 1 and 1 -> 5",
            )
    if cfg.scale_labels and out_of_range > max(1, len(numbers)):
        raise DataError(
            f"{out_of_range} of {out_of_range + len(numbers)} labels lie outside the declared range {low:g}-{high:g}",
            hint="are they already 1-5? then drop --scale-labels; otherwise declare the range with --label-range",
        )
    if cfg.check_videos and candidates:
        from recipe_lib.data.videophy2 import find_unreadable

        bad = find_unreadable(sorted({c["video"] for c in candidates}), workers=4)
        for c in [c for c in candidates if c["video"] in bad]:
            dropped.append(DroppedRow(c["row"], "unreadable_video", bad[c["video"]], c["link"], c["label"]))
        candidates = [c for c in candidates if c["video"] not in bad]
    if not candidates:
        reasons = ", ".join(f"{n} {r}" for r, n in count_reasons(dropped).items()) or "the sheet has no data rows"
        raise DataError(
            f"no usable rows in {cfg.sheet}: {reasons}",
            hint=f"links are matched by {rule.describe()} in {videos_dir}; see --link-pattern / --link-template",
        )
    scores = (
        scale_labels([c["label"] for c in candidates], low, high)
        if cfg.scale_labels
        else [int(c["label"]) for c in candidates]
    )
    missing_prompts: list[str] = []
    records: dict[str, list[Any]] = {
        k: [] for k in ("video_url", "pc", "caption", "link", "sheet_row", "raw_label", "video_name")
    }
    for c, score in zip(candidates, scores):
        video: Path = c["video"]
        caption = _prompt_for(prompts_dir, video.stem) if prompts_dir else None
        if caption is None:
            caption = c["caption_cell"]
            if prompts_dir is not None:
                missing_prompts.append(video.name)
        records["video_url"].append(str(video.resolve()))
        records["pc"].append(score)
        records["caption"].append(caption)
        records["link"].append(c["link"])
        records["sheet_row"].append(c["row"])
        records["raw_label"].append(float(c["label"]))
        records["video_name"].append(str(video.relative_to(videos_dir)))
    ds = datasets.Dataset.from_dict(records)
    train, evaluation, split_notes = _split(ds, cfg.eval_size, cfg.seed)
    report = split_report(train, evaluation)
    balance = None
    if cfg.balance_labels:
        train, balance = balance_labels(train, label_column="pc", seed=cfg.seed)

    from recipe_lib.video import VIDEO_SUFFIXES

    on_disk = sorted(p for p in videos_dir.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    without_rows = [str(p.relative_to(videos_dir)) for p in on_disk if os.path.realpath(p) not in referenced]
    result = CustomDataResult(
        out_dir=Path(cfg.out_dir),
        n_rows=len(table.rows),
        n_matched=n_matched,
        n_used=len(candidates),
        dropped=dropped,
        raw_label_counts={f"{k:g}": v for k, v in sorted(Counter(c["label"] for c in candidates).items())},
        label_counts=dict(sorted(Counter(scores).items())),
        split=report,
        balance=balance,
        train_size=train.num_rows,
        eval_size=evaluation.num_rows,
        missing_prompts=missing_prompts,
        videos_without_rows=without_rows,
        notes=list(table.notes) + [f"links matched by {rule.describe()}"] + split_notes,
        train_label_counts=dict(sorted(Counter(train["pc"]).items())),
        eval_label_counts=dict(sorted(Counter(evaluation["pc"]).items())),
    )

    def build(tmp: Path) -> None:
        train.save_to_disk(str(tmp / "train"))
        evaluation.save_to_disk(str(tmp / "eval"))
        frame = result.dropped_frame()
        frame.to_csv(tmp / "dropped_rows.csv", index=False)
        result.seconds = time.perf_counter() - start
        write_json(
            tmp / SPLIT_INFO,
            {
                "counts": result.counts(),
                "dropped_by_reason": result.dropped_by_reason(),
                "dropped_rows": [_dropped_dict(d) for d in sorted(dropped, key=lambda d: d.row)],
                "labels": {
                    "train": {str(k): v for k, v in result.train_label_counts.items()},
                    "eval": {str(k): v for k, v in result.eval_label_counts.items()},
                    "raw": result.raw_label_counts,
                    "scaled": {str(k): v for k, v in result.label_counts.items()},
                    "scaling": f"linear {low:g}-{high:g} -> 1-5, rounded half up" if cfg.scale_labels else None,
                },
                "split": report.to_dict(),
                "balance": balance.to_dict() if balance else None,
                "balance_note": BALANCE_NOTE if balance else "labels not balanced",
                "sheet": {
                    "path": str(cfg.sheet),
                    "sheet": table.sheet,
                    "other_sheets": table.other_sheets,
                    "header_row": table.header_row,
                    "trailing_empty_rows_ignored": table.trailing_empty,
                },
                "link_rule": rule.describe(),
                "missing_prompts": missing_prompts,
                "videos_without_rows": without_rows,
                "notes": result.notes,
                "settings": to_dict(cfg),
                "seconds": round(result.seconds, 3),
            },
        )

    replace_dir(Path(cfg.out_dir), build, SPLIT_INFO)
    return result


def _dropped_dict(d: DroppedRow) -> dict[str, Any]:
    out = d.to_dict()
    return {
        "sheet_row": out["row"],
        "reason": out["reason"],
        "detail": out["detail"],
        "link": out["video_url"],
        "label": out["label"],
    }


def load_split_info(out_dir: str | Path) -> dict[str, Any]:
    import json

    path = Path(out_dir) / SPLIT_INFO
    if not path.exists():
        raise DataError(f"no {SPLIT_INFO} in {out_dir}", hint="run `plausibility prepare custom` first")
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------------------------------
# where a notebook finds a team's data


@dataclasses.dataclass
class TeamData:
    """Where a team's label sheet, videos and (optional) prompt files are."""

    sheet: Path
    videos_dir: Path
    prompts_dir: Path | None
    planted: dict[int, str] = dataclasses.field(default_factory=dict)  # demo only: sheet row -> planted problem


def find_team_data(excel_path: str | Path, data_dir: str | Path | None) -> TeamData:
    """The sheet and folders notebook 05 works on.

    ``data_dir`` is the team's folder: its ``videos/`` sub-folder (or the folder itself) holds the clips and
    ``prompts/`` the optional prompt files; a relative ``excel_path`` is looked up in ``data_dir`` first.
    """
    if data_dir is None:
        raise ConfigError("set data_dir to the folder that holds your videos (and prompts/)")
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise DataError(f"data folder not found: {data_dir}")
    sheet = Path(excel_path).expanduser()
    if not sheet.is_absolute() and (data_dir / sheet).exists():
        sheet = data_dir / sheet
    videos = data_dir / "videos" if (data_dir / "videos").is_dir() else data_dir
    prompts = data_dir / "prompts" if (data_dir / "prompts").is_dir() else None
    return TeamData(sheet, videos, prompts)
