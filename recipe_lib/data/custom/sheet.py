"""Reading a team's label sheet (xlsx/csv): header row, link and label columns, merged cells; where its data lives.

Part of :mod:`recipe_lib.data.custom` (see its docstring).
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

from recipe_lib.errors import ConfigError, DataError

HEADER_SEARCH_ROWS = 10

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
        from recipe_lib.data.tables import check_table_file

        check_table_file(path)
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
