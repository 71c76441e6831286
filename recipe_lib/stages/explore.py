"""Exploration helpers for notebook 01: the clip table, label counts, cross-tables, example contact sheets, and for
full-scale data the per-generator / per-category tables, the hard subset and clip duration/resolution/fps statistics.
Plot helpers here return matplotlib Figures."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from recipe_lib.config import build_dir


def clips_table(source: str | Path | None = None, split: str | None = None):  # noqa: ANN201 - pandas.DataFrame
    """The clips of a dataset folder or table as a DataFrame; ``None`` means the demo profile's synthetic clips."""
    import pandas as pd

    from recipe_lib.data.tables import load_rows

    if source is None:
        from recipe_lib.demo import ensure_demo_data

        source = ensure_demo_data().all_dir
    return pd.DataFrame(load_rows(source, split=split))


def label_counts(df: Any, column: str = "pc") -> dict[int, int]:
    counts = df[column].value_counts().sort_index()
    return {int(k): int(v) for k, v in counts.items()}


def crosstab(df: Any, rows: str, columns: str = "pc"):  # noqa: ANN201
    import pandas as pd

    return pd.crosstab(df[rows], df[columns])


def example_sheets(
    df: Any,
    per_label: int = 1,
    column: str = "pc",
    out_dir: Path | None = None,
    frames: int = 4,
    *,
    seed: int | None = None,
    skipped: list[tuple[str, str]] | None = None,
) -> list[tuple[Path, str]]:
    """Contact sheets (PNG) of ``per_label`` example clips for each label; returns (png, title) pairs.

    Clips are taken in table order, or drawn at random with ``seed``. A clip that cannot be read is passed over (the
    next one of that label is tried) and appended to ``skipped`` as (video, reason) when a list is given."""
    from recipe_lib.errors import VideoError
    from recipe_lib.video import contact_sheet

    out_dir = out_dir or build_dir() / "01_dataset_exploration" / "sheets"
    sheets = []
    for label in sorted(df[column].dropna().unique()):
        rows = df[df[column] == label]
        if seed is not None:
            rows = rows.sample(frac=1.0, random_state=seed)
        made = 0
        for _, row in rows.iterrows():
            if made >= per_label:
                break
            png = out_dir / f"{Path(str(row['video_url'])).stem}.png"
            try:
                contact_sheet(row["video_url"], png, n=frames)
            except VideoError as exc:
                if skipped is not None:
                    skipped.append((str(row["video_url"]), exc.message))
                continue
            title = f"pc={int(label)}"
            for extra in ("violation", "model_name"):
                if extra in row and row[extra] is not None and row[extra] == row[extra]:
                    title += f" · {row[extra]}"
                    break
            sheets.append((png, title))
            made += 1
    return sheets


# --------------------------------------------------------------------------------------------------------------------
# Full-scale views (VideoPhy-2: thousands of clips, many generators and categories)

SCORES = (1, 2, 3, 4, 5)


def _require(df: Any, column: str) -> None:
    from recipe_lib.errors import DataError

    if column not in df.columns:
        raise DataError(f"no '{column}' column in this data", hint=f"columns: {', '.join(map(str, df.columns))}")


def label_table(df: Any, column: str = "pc"):  # noqa: ANN201 - pandas.DataFrame
    """Clips and share per label; every score 1-5 is listed (0 when absent), other values after them."""
    import pandas as pd

    _require(df, column)
    counts = df[column].value_counts(dropna=False)
    labels = list(SCORES) + sorted((k for k in counts.index if k not in SCORES), key=str)
    clips = [int(counts.get(k, 0)) for k in labels]
    total = max(1, sum(clips))
    return pd.DataFrame(
        {"clips": clips, "share": [round(c / total, 3) for c in clips]}, index=pd.Index(labels, name=column)
    )


def majority_baseline(df: Any, column: str = "pc") -> float:
    """Accuracy of always answering the most common label."""
    counts = df[column].value_counts()
    return float(counts.max() / counts.sum()) if len(counts) else 0.0


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "y")
    try:
        return bool(value) and value == value  # NaN is not hard
    except (TypeError, ValueError):
        return False


def group_table(df: Any, by: str, column: str = "pc"):  # noqa: ANN201 - pandas.DataFrame
    """One row per value of ``by`` (e.g. ``model_name``, ``category``): clips, mean label, count per label 1-5 and
    the share of hard clips (when ``is_hard`` is there); largest groups first."""
    import pandas as pd

    _require(df, by)
    _require(df, column)
    groups = df[by].fillna("(none)").astype(str)
    table = pd.crosstab(groups, df[column]).reindex(columns=list(SCORES), fill_value=0)
    table.columns = [f"pc={c}" for c in table.columns]
    out = pd.DataFrame({"clips": groups.value_counts()})
    out["mean pc"] = df.groupby(groups)[column].mean().round(2)
    out = out.join(table)
    if "is_hard" in df.columns:
        out["hard share"] = df["is_hard"].map(_truthy).groupby(groups).mean().round(3)
    out.index.name = by
    return out.sort_values(["clips"], ascending=False)


def hard_subset(df: Any):  # noqa: ANN201 - pandas.DataFrame
    """The rows marked ``is_hard`` (VideoPhy-2's hard split)."""
    _require(df, "is_hard")
    return df[df["is_hard"].map(_truthy)]


def hard_table(df: Any, column: str = "pc"):  # noqa: ANN201 - pandas.DataFrame
    """Label shares of all clips, the hard ones and the rest, side by side."""
    import pandas as pd

    _require(df, "is_hard")
    hard = df["is_hard"].map(_truthy)
    parts = {"all": df, "hard": df[hard], "not hard": df[~hard]}
    return pd.DataFrame({name: label_table(part, column)["clips"] for name, part in parts.items()})


def group_labels_figure(df: Any, by: str, column: str = "pc", top: int = 15, title: str | None = None):  # noqa: ANN201
    """Stacked bars: the share of each label 1-5 within each of the ``top`` largest groups of ``by``."""
    from matplotlib.figure import Figure

    table = group_table(df, by, column).head(top)
    shares = table[[f"pc={s}" for s in SCORES]].div(table["clips"], axis=0)
    fig = Figure(figsize=(7, 0.35 * len(table) + 1.6), layout="constrained")
    ax = fig.add_subplot()
    left = [0.0] * len(table)
    colors = ["#c44e52", "#dd8452", "#ccb974", "#55a868", "#4c72b0"]
    names = [f"{i} ({n})" for i, n in zip(table.index, table["clips"])]
    for score, color in zip(SCORES, colors):
        values = shares[f"pc={score}"].tolist()
        ax.barh(names, values, left=left, color=color, label=f"pc={score}")
        left = [a + b for a, b in zip(left, values)]
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of clips")
    ax.legend(ncols=5, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    ax.set_title(title or f"labels per {by}", pad=24)
    return fig


@dataclasses.dataclass
class ClipStats:
    """Container facts of every clip (``table``: one row per clip; unreadable clips keep a row with ``error``)."""

    table: Any  # pandas.DataFrame

    @property
    def readable(self):  # noqa: ANN201
        return self.table[self.table["error"].isna()]

    @property
    def n_unreadable(self) -> int:
        return int(self.table["error"].notna().sum())

    def unreadable(self) -> list[tuple[str, str]]:
        bad = self.table[self.table["error"].notna()]
        return list(zip(bad["video_url"], bad["error"]))

    def summary(self) -> dict[str, Any]:
        ok = self.readable
        out: dict[str, Any] = {"clips": len(self.table), "readable": len(ok), "unreadable": self.n_unreadable}
        if len(ok):
            d = ok["duration"]
            out["duration_s"] = {
                "min": round(float(d.min()), 3),
                "median": round(float(d.median()), 3),
                "max": round(float(d.max()), 3),
            }
            out["fps"] = {f"{k:g}": int(v) for k, v in ok["fps"].round(2).value_counts().items()}
            out["resolution"] = {str(k): int(v) for k, v in ok["resolution"].value_counts().head(10).items()}
        return out


def clip_stats(df: Any, workers: int = 4, limit: int | None = None) -> ClipStats:
    """Probe every clip (duration, fps, frames, size, codec) on ``workers`` threads without decoding it.

    Clips that cannot be read are counted (``error`` says why), never dropped from the table."""
    import concurrent.futures as cf

    import pandas as pd

    from recipe_lib.errors import VideoError
    from recipe_lib.video import probe

    _require(df, "video_url")
    urls = [str(u) for u in df["video_url"].tolist()][:limit]

    def one(url: str) -> dict[str, Any]:
        try:
            info = probe(url)
        except VideoError as exc:
            return {"video_url": url, "error": exc.message}
        return {
            "video_url": url,
            "duration": info.duration,
            "fps": info.fps,
            "frames": info.frames,
            "width": info.width,
            "height": info.height,
            "resolution": f"{info.width}x{info.height}",
            "codec": info.codec,
            "error": None,
        }

    with cf.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        rows = list(pool.map(one, urls))
    columns = ["video_url", "duration", "fps", "frames", "width", "height", "resolution", "codec", "error"]
    return ClipStats(pd.DataFrame(rows, columns=columns))


def clip_stats_figure(stats: ClipStats, title: str = "Clips"):  # noqa: ANN201
    """Three panels: duration histogram, clips per frame rate, clips per resolution (top 8); unreadable clips are
    named in the title."""
    from matplotlib.figure import Figure

    ok = stats.readable
    fig = Figure(figsize=(11, 3.2), layout="constrained")
    a, b, c = fig.subplots(1, 3)
    if len(ok):
        a.hist(ok["duration"], bins=min(30, max(5, len(ok) // 5)), color="#4c72b0")
        fps = ok["fps"].round(2).value_counts().sort_index()
        b.bar([f"{v:g}" for v in fps.index], fps.values, color="#55a868")
        res = ok["resolution"].value_counts().head(8)
        c.barh(list(res.index), res.values, color="#dd8452")
        c.invert_yaxis()
    a.set_xlabel("duration (s)")
    a.set_ylabel("clips")
    b.set_xlabel("frames per second")
    c.set_xlabel("clips")
    c.set_title("resolution", fontsize=9)
    fig.suptitle(f"{title}: {len(ok)} readable, {stats.n_unreadable} unreadable")
    return fig


@dataclasses.dataclass
class ExploreConfig:
    source: str | None = dataclasses.field(
        default=None, metadata={"help": "dataset folder or table (default: the demo's synthetic clips)"}
    )
    split: str | None = dataclasses.field(default=None, metadata={"help": "split name when the folder holds several"})
    examples_per_label: int = dataclasses.field(default=1, metadata={"help": "contact sheets drawn per label"})
    label_column: str = dataclasses.field(default="pc", metadata={"help": "the label column"})

    def __post_init__(self) -> None:
        from recipe_lib.errors import ConfigError

        if self.examples_per_label < 0:
            raise ConfigError(f"examples_per_label must be at least 0, got {self.examples_per_label}")


@dataclasses.dataclass
class ExploreResult:
    table: Any  # pandas.DataFrame: one row per clip
    label_counts: dict[int, int]
    stats: ClipStats
    sheets: list[tuple[Path, str]]
    majority_accuracy: float

    def metrics(self) -> dict[str, Any]:
        """What notebook 01 records in ``metrics.json``."""
        df = self.table
        out: dict[str, Any] = {
            "n_clips": len(df),
            "label_counts": self.label_counts,
            "n_example_sheets": len(self.sheets),
            "majority_accuracy": self.majority_accuracy,
            "clip_stats": self.stats.summary(),
        }
        if "violation" in df.columns:
            out["violation_counts"] = {str(k): int(v) for k, v in df["violation"].value_counts().items()}
        return out


def run_explore(cfg: ExploreConfig) -> ExploreResult:
    """The clip table, its labels, every clip's container facts and example contact sheets per label."""
    df = clips_table(cfg.source, split=cfg.split)
    return ExploreResult(
        table=df,
        label_counts=label_counts(df, cfg.label_column),
        stats=clip_stats(df),
        sheets=example_sheets(df, per_label=cfg.examples_per_label, column=cfg.label_column),
        majority_accuracy=majority_baseline(df, cfg.label_column),
    )
