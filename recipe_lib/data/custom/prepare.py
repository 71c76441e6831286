"""The custom-data stage: sheet rows to clips with labels, every dropped row counted, stratified split, dataset folders.

Part of :mod:`recipe_lib.data.custom` (see its docstring).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from recipe_lib.config import to_dict
from recipe_lib.data.accounting import DroppedRow, count_reasons, describe_dropped, replace_dir, write_json
from recipe_lib.data.custom.links import LinkRule, resolve_inside
from recipe_lib.data.custom.sheet import _cell_text, _find_column, read_sheet
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
from recipe_lib.io import atomic_write_csv

BALANCE_NOTE = "balancing applies to the train split only; eval keeps the real label distribution"

SPLIT_INFO = "split_info.json"


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
        if not os.path.lexists(p):
            continue
        real, root = Path(os.path.realpath(p)), Path(os.path.realpath(prompts_dir))
        if root not in real.parents:
            # The same rule as links to videos: a caption file that is a link out of the folder (to a system file)
            # would put that file's text in the training data.
            raise DataError(
                f"caption file {p} links outside --prompts-dir (to {real})",
                hint="copy the caption into the prompts folder instead of linking it",
            )
        if p.is_file():
            text = p.read_text(encoding="utf-8", errors="replace").strip()
            from recipe_lib.constants import MAX_CELL_CHARS

            if len(text) > MAX_CELL_CHARS:
                raise DataError(f"caption file {p} holds {len(text)} characters (at most {MAX_CELL_CHARS})")
            return text
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


@dataclasses.dataclass
class Candidate:
    """A sheet row that passed every check: its clip and its (unscaled) label."""

    row: int
    link: str
    video: Path
    label: float
    caption_cell: str


@dataclasses.dataclass
class RowChecks:
    """The checks every sheet row goes through, in order; the first problem names the row's drop reason and every
    problem goes into its detail. Counts the rows whose link matched a file and remembers those files."""

    rule: LinkRule
    videos_dir: Path
    link_key: str
    label_key: str
    caption_key: str | None
    low: float
    high: float
    scale: bool
    n_matched: int = 0
    referenced: set[str] = dataclasses.field(default_factory=set)

    def _video(self, link: str, row_no: int, problems: list[tuple[str, str]]) -> Path | None:
        if not link:
            problems.append(("missing_link", f"no link in '{self.link_key}'"))
            return None
        try:
            rel = self.rule.name_for(link, row_no)
            video = resolve_inside(self.videos_dir, rel)
            if not video.is_file():
                problems.append(("video_not_found", f"no video '{rel}' in {self.videos_dir}"))
                return None
        except ValueError as exc:
            problems.append(("link_no_match", str(exc)))
            return None
        except PermissionError as exc:
            problems.append(("unsafe_path", f"refused: {exc}"))
            return None
        self.n_matched += 1
        self.referenced.add(os.path.realpath(video))
        return video

    def _label(self, raw: Any, problems: list[tuple[str, str]]) -> float | None:
        number = as_number(raw)
        if raw is None:
            problems.append(("missing_label", f"no label in '{self.label_key}'"))
        elif number is None:
            problems.append(("label_not_a_number", f"label {raw!r} is not a number"))
        elif not self.low <= number <= self.high or (not self.scale and number != int(number)):
            what = "a whole score 1-5" if not self.scale else f"inside the declared range {self.low:g}-{self.high:g}"
            problems.append(("label_out_of_range", f"label {raw!r} is not {what}"))
        return number

    def validate_row(
        self, row_no: int, cells: dict[str, Any], first_for_file: dict[str, int]
    ) -> Candidate | DroppedRow:
        """The row as a :class:`Candidate`, or the :class:`DroppedRow` that says why it is left out.
        ``first_for_file`` (clip -> first row using it) is updated: a later row with the same clip is a duplicate."""
        if all(v is None for v in cells.values()):
            return DroppedRow(row_no, "empty_row", "the row is empty")
        link = _cell_text(cells.get(self.link_key))
        raw_label = cells.get(self.label_key)
        problems: list[tuple[str, str]] = []
        video = self._video(link, row_no, problems)
        number = self._label(raw_label, problems)
        if video is not None and not problems:
            key = os.path.realpath(video)
            if key in first_for_file:
                problems.append(("duplicate_video", f"same video as row {first_for_file[key]}; the first is kept"))
            else:
                first_for_file[key] = row_no
        if problems:
            return DroppedRow(row_no, problems[0][0], "; ".join(d for _, d in problems), link or None, raw_label)
        caption = _cell_text(cells.get(self.caption_key)) if self.caption_key else ""
        return Candidate(row_no, link, video, number, caption)  # type: ignore[arg-type]


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

    checks = RowChecks(rule, videos_dir, link_key, label_key, caption_key, low, high, cfg.scale_labels)
    dropped: list[DroppedRow] = []
    candidates: list[Candidate] = []
    first_for_file: dict[str, int] = {}
    for row_no, cells in table.rows:
        outcome = checks.validate_row(row_no, cells, first_for_file)
        (candidates if isinstance(outcome, Candidate) else dropped).append(outcome)  # type: ignore[arg-type]

    numbers = [c.label for c in candidates]
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

        bad = find_unreadable(sorted({c.video for c in candidates}), workers=4)
        for c in [c for c in candidates if c.video in bad]:
            dropped.append(DroppedRow(c.row, "unreadable_video", bad[c.video], c.link, c.label))
        candidates = [c for c in candidates if c.video not in bad]
    if not candidates:
        reasons = ", ".join(f"{n} {r}" for r, n in count_reasons(dropped).items()) or "the sheet has no data rows"
        raise DataError(
            f"no usable rows in {cfg.sheet}: {reasons}",
            hint=f"links are matched by {rule.describe()} in {videos_dir}; see --link-pattern / --link-template",
        )
    scores = (
        scale_labels([c.label for c in candidates], low, high)
        if cfg.scale_labels
        else [int(c.label) for c in candidates]
    )
    missing_prompts: list[str] = []
    records: dict[str, list[Any]] = {
        k: [] for k in ("video_url", "pc", "caption", "link", "sheet_row", "raw_label", "video_name")
    }
    for c, score in zip(candidates, scores):
        video = c.video
        caption = _prompt_for(prompts_dir, video.stem) if prompts_dir else None
        if caption is None:
            caption = c.caption_cell
            if prompts_dir is not None:
                missing_prompts.append(video.name)
        records["video_url"].append(str(video.resolve()))
        records["pc"].append(score)
        records["caption"].append(caption)
        records["link"].append(c.link)
        records["sheet_row"].append(c.row)
        records["raw_label"].append(float(c.label))
        records["video_name"].append(str(video.relative_to(videos_dir)))
    ds = datasets.Dataset.from_dict(records)
    train, evaluation, split_notes = _split(ds, cfg.eval_size, cfg.seed)
    report = split_report(train, evaluation)
    balance = None
    if cfg.balance_labels:
        train, balance = balance_labels(train, label_column="pc", seed=cfg.seed)

    from recipe_lib.video import VIDEO_SUFFIXES

    on_disk = sorted(p for p in videos_dir.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    without_rows = [str(p.relative_to(videos_dir)) for p in on_disk if os.path.realpath(p) not in checks.referenced]
    result = CustomDataResult(
        out_dir=Path(cfg.out_dir),
        n_rows=len(table.rows),
        n_matched=checks.n_matched,
        n_used=len(candidates),
        dropped=dropped,
        raw_label_counts={f"{k:g}": v for k, v in sorted(Counter(c.label for c in candidates).items())},
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
        atomic_write_csv(tmp / "dropped_rows.csv", frame)
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
