"""Turn scores into decisions: a keep/reject manifest at a threshold, the best of N rollouts of one prompt, and the
choice of the threshold itself from labelled clips.

The value a decision reads is the clip's **expected score** (the p(1..5)-weighted mean in ``expected`` mode, the mean
over trials in ``generate`` mode) when there is one, else its integer score. A clip is kept when that value is at least
the threshold. Clips whose answer could not be parsed get the decision ``unparsed`` and clips that could not be read
get ``skipped``: neither is ever kept silently, and both carry their reason.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from recipe_lib.errors import ConfigError, DataError, RecipeError
from recipe_lib.inference.exports import csv_rows, csv_writer
from recipe_lib.inference.record import item_of, label_of
from recipe_lib.io import atomic_write_csv, claim_outputs, writes_as

DECISIONS = ("keep", "reject", "unparsed", "skipped")
MANIFEST_COLUMNS = ["video", "decision", "value", "value_source", "score", "expected_score", "threshold", "reason"]


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def decision_value(row: dict[str, Any]) -> tuple[float | None, str | None]:
    """The value a decision reads and where it came from (``expected_score`` or ``score``); None when unparsed."""
    if row.get("score") is None and _is_missing(row.get("expected_score")):
        return None, None
    if not _is_missing(row.get("expected_score")):
        return float(row["expected_score"]), "expected_score"
    return float(row["score"]), "score"


def decide(row: dict[str, Any], threshold: float) -> tuple[str, float | None, str | None, str]:
    """(decision, value, value source, reason) for one scored row."""
    value, source = decision_value(row)
    if value is None or row.get("score") is None:
        return "unparsed", value, source, str(row.get("parse_error") or "the critic gave no score")
    if value >= threshold:
        return "keep", value, source, f"{source} {value:.3f} >= {threshold:g}"
    return "reject", value, source, f"{source} {value:.3f} < {threshold:g}"


def skipped_record(skip: dict[str, Any], threshold: float) -> dict[str, Any]:
    """The keep/reject row of a clip that was not scored (its reason kept)."""
    return {
        "video": skip["video"],
        "decision": "skipped",
        "value": None,
        "value_source": None,
        "score": None,
        "expected_score": None,
        "threshold": threshold,
        "reason": skip.get("reason", "skipped"),
    }


def prediction_records(
    rows: Sequence[dict[str, Any]], skipped: Sequence[dict[str, Any]], threshold: float, label_key: str = "pc"
) -> list[dict[str, Any]]:
    """One flat record per clip (scored, unparsed or skipped) with everything the per-video files hold."""
    records = []
    for r in rows:
        decision, value, source, reason = decide(r, threshold)
        item = item_of(r)
        probs = r.get("probs") or [None] * 5
        trials = r.get("trials") or []
        timing = r.get("timing") or {}
        rec = {
            "video": r["video"],
            "decision": decision,
            "value": value,
            "value_source": source,
            "score": r.get("score"),
            "expected_score": r.get("expected_score"),
            "threshold": threshold,
            "reason": reason,
            **{f"p{i}": p for i, p in enumerate(probs, start=1)},
            "digit_mass": r.get("digit_mass"),
            "n_trials": len(trials),
            "trial_scores": " ".join("-" if t.get("score") is None else str(t["score"]) for t in trials),
            "parse_error": r.get("parse_error"),
            "raw_output": r.get("raw_output")
            if r.get("raw_output") is not None
            else (trials[0]["text"] if trials else None),
            "preprocess_s": timing.get("preprocess_s"),
            "model_s": timing.get("model_s"),
            "label": item.get(label_key),
            "caption": item.get("caption"),
            "model": r.get("model"),
            "mode": r.get("mode"),
            "video_sha256": r.get("video_sha256"),
        }
        records.append(rec)
    records += [skipped_record(s, threshold) for s in skipped]
    return records


FILTER_FILES = ("predictions.csv", "predictions.jsonl", "manifest.csv")  # what write_filter_outputs writes


def _atomic_csv(frame: Any, path: Path) -> Path:
    return atomic_write_csv(path, frame)


@dataclasses.dataclass
class FilterResult:
    """Where the per-video files and the manifest went, and how many clips each decision got. ``records`` holds
    every clip's record for a run of up to ``IN_MEMORY_ROWS`` clips, and is empty above that (the files hold them:
    :meth:`manifest` then reads ``manifest.csv``)."""

    predictions_csv: Path
    predictions_jsonl: Path
    manifest_csv: Path
    threshold: float
    counts: dict[str, int]
    records: list[dict[str, Any]]

    def manifest(self) -> Any:
        import pandas as pd

        if self.records:
            return pd.DataFrame(self.records)[MANIFEST_COLUMNS]
        if sum(self.counts.values()):  # a large run: the records are in the file, not in memory
            return pd.read_csv(self.manifest_csv)
        return pd.DataFrame(columns=MANIFEST_COLUMNS)


def write_filter_outputs(
    rows: Iterable[dict[str, Any]],
    skipped: Iterable[dict[str, Any]],
    out_dir: str | Path,
    threshold: float,
    label_key: str = "pc",
) -> FilterResult:
    """Write ``predictions.csv`` / ``predictions.jsonl`` (every clip of this run, full detail including trials and
    timing) and ``manifest.csv`` (video, decision, value, reason) into ``out_dir``, atomically. Rows and skips are
    streamed a chunk at a time (they may be views of the store holding millions of clips)."""
    import itertools

    if _is_missing(threshold):
        raise ConfigError("the threshold must be a number")
    out = claim_outputs(out_dir, FILTER_FILES)
    keep = isinstance(rows, list) and isinstance(skipped, list)  # views of a large run's store: nothing is kept
    scored = (rec for chunk in _chunks(rows) for rec in prediction_records(chunk, [], threshold, label_key))
    records = itertools.chain(scored, (skipped_record(s, threshold) for s in skipped))
    return _write_decisions(records, MANIFEST_COLUMNS, out, threshold, keep)


def _chunks(rows: Iterable[Any], size: int = 10_000) -> Iterator[list[Any]]:
    import itertools

    it = iter(rows)
    while batch := list(itertools.islice(it, size)):
        yield batch


def _write_decisions(
    records: Iterable[dict[str, Any]], manifest_columns: list[str], out: Path, threshold: float, keep: bool = True
) -> FilterResult:
    """predictions.csv (every field of ``records``), predictions.jsonl and manifest.csv (``manifest_columns``),
    written a chunk of records at a time; the records are kept for the result only when ``keep`` and there are at
    most ``IN_MEMORY_ROWS`` of them."""
    import pandas as pd

    from recipe_lib.constants import IN_MEMORY_ROWS
    from recipe_lib.io import atomic_writer, csv_text, defuse_cell

    counts = dict.fromkeys(DECISIONS, 0)
    kept: list[dict[str, Any]] = []
    columns: list[str] | None = None
    paths = out / "predictions.csv", out / "predictions.jsonl", out / "manifest.csv"
    with atomic_writer(paths[0]) as pred, atomic_writer(paths[1]) as jsonl, atomic_writer(paths[2]) as manifest:
        pred_csv, manifest_csv = csv_writer(pred), csv_writer(manifest)
        for batch in _chunks(records):  # written with the csv module: no DataFrame per chunk (csv_rows)
            if columns is None:
                columns = list(dict.fromkeys([*(k for r in batch for k in r), *manifest_columns]))
                pred_csv.writerow([defuse_cell(c) for c in columns])
                manifest_csv.writerow([defuse_cell(c) for c in manifest_columns])
            pred_csv.writerows(csv_rows(batch, columns))
            manifest_csv.writerows(csv_rows(batch, manifest_columns))
            jsonl.write("".join(_JSON.encode(_jsonable(r)) + "\n" for r in batch))
            for r in batch:
                counts[r["decision"]] += 1
            if keep and len(kept) <= IN_MEMORY_ROWS:
                kept += batch
        if columns is None:
            empty = pd.DataFrame(columns=manifest_columns)
            pred.write(csv_text(empty))
            manifest.write(csv_text(empty))
    return FilterResult(
        predictions_csv=paths[0],
        predictions_jsonl=paths[1],
        manifest_csv=paths[2],
        threshold=float(threshold),
        counts=counts,
        records=kept if len(kept) <= IN_MEMORY_ROWS else [],
    )


_JSON = json.JSONEncoder(ensure_ascii=False)  # what json.dumps(..., ensure_ascii=False) builds on every call


def _jsonable(record: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}


# ---------------------------------------------------------------------------------------------------------------------
# Best of N rollouts
# ---------------------------------------------------------------------------------------------------------------------


def compile_group_pattern(pattern: str) -> re.Pattern[str]:
    """A file-name regex with a named group ``group`` (e.g. ``(?P<group>.+)_seed\\d+\\.mp4``)."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"--group-pattern is not a valid regular expression: {exc}") from exc
    if "group" not in compiled.groupindex:
        raise ConfigError(
            f"--group-pattern {pattern!r} has no named group 'group'",
            hint=r"mark the part of the file name shared by rollouts of one prompt, e.g. '(?P<group>.+)_\d+\.mp4'",
        )
    return compiled


@dataclasses.dataclass
class RankResult:
    """``groups``: one row per group (best clip, runner-up, margin); ``clips``: every clip with its rank."""

    groups: Any  # pandas.DataFrame
    clips: Any  # pandas.DataFrame
    ranking_csv: Path | None = None
    clips_csv: Path | None = None

    @property
    def n_ungrouped(self) -> int:
        return int((self.clips["group"].isna()).sum()) if len(self.clips) else 0


def _group_of(video: str, item: dict[str, Any] | None, group_by: str | None, pattern: re.Pattern[str] | None):  # noqa: ANN202
    if pattern is not None:
        match = pattern.search(Path(video).name)
        if not match or match.group("group") is None:
            return None, f"file name does not match --group-pattern {pattern.pattern!r}"
        return match.group("group"), None
    if item is None:
        return None, "not scored, so its table row is unknown"
    value = item.get(group_by)
    if _is_missing(value) or value == "":
        return None, f"no value in column '{group_by}'"
    return str(value), None


@writes_as("rank")
def rank_rollouts(
    rows: Sequence[dict[str, Any]],
    skipped: Sequence[dict[str, Any]] = (),
    group_by: str | None = None,
    group_pattern: str | None = None,
    out_dir: str | Path | None = None,
) -> RankResult:
    """Group rollouts of the same prompt and pick the most plausible clip of each group.

    Groups come from a column of the clips' table (``group_by``) or from the named group ``group`` of a regex
    matched against each file name (``group_pattern``). Within a group, scored clips are ordered by decision value
    (expected score, else score), then score, then file name; the best clip's ``margin`` is its lead over the
    runner-up. Unparsed and skipped clips are listed with their reason and never win. Clips that fall in no group are
    listed with ``group`` empty and the reason. With ``out_dir``, writes ``ranking.csv`` (one row per group) and
    ``ranking_clips.csv`` (one row per clip).
    """
    import pandas as pd

    if (group_by is None) == (group_pattern is None):
        raise ConfigError("give exactly one of --group-by COLUMN or --group-pattern REGEX")
    pattern = compile_group_pattern(group_pattern) if group_pattern is not None else None
    if group_by is not None and rows:
        known = set().union(*(item_of(r).keys() for r in rows))
        if group_by not in known:
            raise ConfigError(
                f"no column '{group_by}' in the clips' table",
                hint=f"columns: {', '.join(sorted(known))}; for loose files use --group-pattern",
            )
    clips: list[dict[str, Any]] = []
    for r in rows:
        group, why = _group_of(r["video"], item_of(r), group_by, pattern)
        value, source = decision_value(r)
        status = "scored" if r.get("score") is not None and value is not None else "unparsed"
        reason = why or (None if status == "scored" else str(r.get("parse_error") or "the critic gave no score"))
        clips.append(
            {
                "group": group,
                "video": r["video"],
                "status": status,
                "value": value if status == "scored" else None,
                "value_source": source,
                "score": r.get("score"),
                "expected_score": r.get("expected_score"),
                "reason": reason,
            }
        )
    for s in skipped:
        group, _ = _group_of(s["video"], None, group_by, pattern)
        clips.append(
            {
                "group": group,
                "video": s["video"],
                "status": "skipped",
                "value": None,
                "value_source": None,
                "score": None,
                "expected_score": None,
                "reason": s.get("reason", "skipped"),
            }
        )
    for c in clips:
        c.update(rank=None, best=False, gap_to_best=None)
    by_group: dict[str, list[dict[str, Any]]] = {}
    for c in clips:
        if c["group"] is not None:
            by_group.setdefault(c["group"], []).append(c)
    summary = []
    for group in sorted(by_group):
        members = by_group[group]
        scored = sorted(
            (c for c in members if c["status"] == "scored"),
            key=lambda c: (-c["value"], -(c["score"] or 0), Path(c["video"]).name),
        )
        for rank, c in enumerate(scored, start=1):
            c["rank"] = rank
            c["gap_to_best"] = scored[0]["value"] - c["value"]
        best = scored[0] if scored else None
        runner = scored[1] if len(scored) > 1 else None
        if best is not None:
            best["best"] = True
        margin = best["value"] - runner["value"] if best and runner else None
        summary.append(
            {
                "group": group,
                "best_video": best["video"] if best else None,
                "best_value": best["value"] if best else None,
                "best_score": best["score"] if best else None,
                "runner_up_video": runner["video"] if runner else None,
                "runner_up_value": runner["value"] if runner else None,
                "margin": margin,
                "tie": bool(margin is not None and margin == 0),
                "n_clips": len(members),
                "n_scored": len(scored),
                "n_unparsed": sum(1 for c in members if c["status"] == "unparsed"),
                "n_skipped": sum(1 for c in members if c["status"] == "skipped"),
                "note": None if best else "no clip of this group has a score",
            }
        )
    group_cols = ["group", "best_video", "best_value", "best_score", "runner_up_video", "runner_up_value", "margin"]
    group_cols += ["tie", "n_clips", "n_scored", "n_unparsed", "n_skipped", "note"]
    clip_cols = ["group", "rank", "best", "video", "status", "value", "value_source", "score", "expected_score"]
    clip_cols += ["gap_to_best", "reason"]
    groups_df = pd.DataFrame(summary, columns=group_cols)
    order = sorted(clips, key=lambda c: (c["group"] is None, c["group"] or "", c["rank"] or 10**9, c["video"]))
    clips_df = pd.DataFrame(order, columns=clip_cols)
    result = RankResult(groups=groups_df, clips=clips_df)
    if out_dir is not None:
        out = claim_outputs(out_dir, ["ranking.csv", "ranking_clips.csv"])
        result.ranking_csv = _atomic_csv(groups_df, out / "ranking.csv")
        result.clips_csv = _atomic_csv(clips_df, out / "ranking_clips.csv")
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Threshold choice
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ThresholdChoice:
    """The chosen threshold, its precision/recall/F1 and the whole curve (one row per candidate threshold)."""

    threshold: float
    objective: str
    target_precision: float | None
    precision: float
    recall: float
    f1: float
    kept: int
    n: int
    n_good: int
    n_unparsed: int
    label_threshold: float
    curve: Any  # pandas.DataFrame: threshold, kept, precision, recall, f1

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "curve"}
        d = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}
        d["curve"] = [
            {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()}
            for rec in self.curve.to_dict(orient="records")
        ]
        return d

    def figure(self, title: str | None = None):  # noqa: ANN201
        return threshold_figure(self, title=title)


def threshold_curve(
    labels: Sequence[int], values: Sequence[float | None], label_threshold: float = 4.0
) -> tuple[Any, int, int]:
    """Precision, recall and F1 of "keep when value >= t" for every distinct value t.

    A label >= ``label_threshold`` is good. Clips without a value (unparsed) are never kept but their good labels
    still count in recall's denominator. Returns (curve DataFrame, number of good clips, number unparsed).
    """
    import pandas as pd

    if len(labels) != len(values):
        raise DataError(f"{len(labels)} labels but {len(values)} values")
    y = np.asarray([float(v) for v in labels], dtype=float)
    v = np.asarray([np.nan if _is_missing(x) else float(x) for x in values], dtype=float)
    good = y >= label_threshold
    has = ~np.isnan(v)
    n_good = int(good.sum())
    cand = np.unique(v[has])[::-1]  # descending: from keeping fewest to keeping most
    pos_vals = np.sort(v[has & good])
    neg_vals = np.sort(v[has & ~good])
    tp = len(pos_vals) - np.searchsorted(pos_vals, cand, side="left")
    fp = len(neg_vals) - np.searchsorted(neg_vals, cand, side="left")
    kept = tp + fp
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(kept > 0, tp / np.maximum(kept, 1), np.nan)
        recall = tp / n_good if n_good else np.full(len(cand), np.nan)
        denom = 2 * tp + fp + (n_good - tp)
        f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)
    curve = pd.DataFrame(
        {"threshold": cand, "kept": kept, "tp": tp, "fp": fp, "precision": precision, "recall": recall, "f1": f1}
    )
    return curve.sort_values("threshold").reset_index(drop=True), n_good, int((~has).sum())


def choose_threshold(
    labels: Sequence[int],
    values: Sequence[float | None],
    objective: Literal["f1", "precision"] = "f1",
    target_precision: float | None = None,
    label_threshold: float = 4.0,
) -> ThresholdChoice:
    """The threshold on the critic's value that maximises F1 (``objective="f1"``), or the one with the highest recall
    among those whose precision is at least ``target_precision`` (``objective="precision"``). Ties go to the higher
    threshold (fewer clips kept)."""
    if objective not in ("f1", "precision"):
        raise ConfigError(f"unknown threshold objective '{objective}'", hint="use 'f1' or 'precision'")
    if objective == "precision" and (target_precision is None or not 0 < target_precision <= 1):
        raise ConfigError("objective 'precision' needs target_precision in (0, 1]")
    curve, n_good, n_unparsed = threshold_curve(labels, values, label_threshold)
    if curve.empty:
        raise DataError("no clip has a score, so no threshold can be chosen", hint="check the unparsed reasons")
    if n_good == 0 or n_good == len(labels):
        raise DataError(
            f"all {len(labels)} labelled clips are {'bad' if n_good == 0 else 'good'} at label >= {label_threshold:g}",
            hint="a threshold needs both good and bad clips among the labels",
        )
    c = curve.iloc[::-1]  # descending threshold so idxmax picks the higher threshold on ties
    if objective == "f1":
        best = c["f1"].fillna(-1).idxmax()
    else:
        ok = c[c["precision"].fillna(-1) >= target_precision]
        if ok.empty:
            top = float(curve["precision"].max())
            raise RecipeError(
                f"no threshold reaches precision {target_precision:g} (the best is {top:.3f})",
                hint="lower the target precision or choose by F1",
            )
        best = ok["recall"].fillna(-1).idxmax()
    row = curve.loc[best]
    return ThresholdChoice(
        threshold=float(row["threshold"]),
        objective=objective,
        target_precision=target_precision,
        precision=float(row["precision"]),
        recall=float(row["recall"]),
        f1=float(row["f1"]),
        kept=int(row["kept"]),
        n=len(labels),
        n_good=n_good,
        n_unparsed=n_unparsed,
        label_threshold=label_threshold,
        curve=curve,
    )


def choose_threshold_from_rows(
    rows: Sequence[dict[str, Any]],
    objective: Literal["f1", "precision"] = "f1",
    target_precision: float | None = None,
    label_threshold: float = 4.0,
    label_key: str = "pc",
) -> ThresholdChoice:
    """:func:`choose_threshold` over labelled scored rows, reading each row's decision value."""
    from recipe_lib.evaluation.metrics import labelled_rows

    rows = labelled_rows(rows, label_key)
    values = [decision_value(r)[0] if r.get("score") is not None else None for r in rows]
    return choose_threshold(
        [label_of(r, label_key) for r in rows], values, objective, target_precision, label_threshold
    )


def threshold_figure(choice: ThresholdChoice | dict[str, ThresholdChoice], title: str | None = None):  # noqa: ANN201
    """Precision, recall and F1 against the threshold (one panel per critic when given a dict), with the chosen
    threshold marked."""
    from matplotlib.figure import Figure

    choices = choice if isinstance(choice, dict) else {"": choice}
    fig = Figure(figsize=(5.2 * len(choices), 3.6), layout="constrained")
    axes = fig.subplots(1, len(choices), squeeze=False)[0]
    for ax, (name, ch) in zip(axes, choices.items()):
        curve = ch.curve
        ax.step(curve["threshold"], curve["precision"], where="post", label="precision", color="#4c72b0")
        ax.step(curve["threshold"], curve["recall"], where="post", label="recall", color="#dd8452")
        ax.step(curve["threshold"], curve["f1"], where="post", label="F1", color="#55a868", linewidth=2)
        ax.axvline(ch.threshold, color="grey", linestyle="--", linewidth=1)
        ax.annotate(
            f"t={ch.threshold:.2f}\nP={ch.precision:.2f} R={ch.recall:.2f} F1={ch.f1:.2f}",
            (ch.threshold, 1.0),
            fontsize=8,
            va="top",
            xytext=(4, 0),
            textcoords="offset points",
        )
        ax.set_ylim(-0.02, 1.05)
        ax.set_xlabel("threshold on the critic's score (keep if >=)")
        ax.set_ylabel("share")
        ax.set_title(name or f"threshold choice ({ch.objective})", fontsize=10)
        ax.legend(loc="lower left", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------------------------------------------------
# Keeping on SA or on joint (SA and PC both at least the threshold)
# ---------------------------------------------------------------------------------------------------------------------

JOINT_COLUMNS = ["pc_value", "sa_value", "pc_label", "sa_label", "joint", "label_joint"]


def joint_records(
    pc_rows: Sequence[dict[str, Any]],
    sa_rows: Sequence[dict[str, Any]],
    pc_skipped: Sequence[dict[str, Any]] = (),
    sa_skipped: Sequence[dict[str, Any]] = (),
    pc_label: str = "pc",
    sa_label: str = "sa",
    threshold: float = 4.0,
) -> list[dict[str, Any]]:
    """One record per clip scored for pc or sa, pairing its pc and sa results by clip (``video``): the decision value
    of each (``pc_value``, ``sa_value``: expected score, else score; None when unparsed or missing), the labels, the
    per-clip ``joint`` (1 when both values are at least ``threshold``, 0 when not, None when either is missing) and
    ``missing``: why one of the two results is absent (the clip's skip reason, e.g. no caption). A clip shown several
    captions gets one record per caption."""
    pc_by_video: dict[str, dict[str, Any]] = {}
    for r in pc_rows:
        pc_by_video.setdefault(r["video"], r)
    sa_by_video: dict[str, list[dict[str, Any]]] = {}
    for r in sa_rows:
        sa_by_video.setdefault(r["video"], []).append(r)
    pc_skip = {s["video"]: s.get("reason", "skipped") for s in pc_skipped}
    sa_skip = {s["video"]: s.get("reason", "skipped") for s in sa_skipped}
    videos = list(dict.fromkeys([*pc_by_video, *sa_by_video]))
    records = []
    for video in videos:
        pc = pc_by_video.get(video)
        for sa in sa_by_video.get(video) or [None]:
            pv = decision_value(pc)[0] if pc is not None and pc.get("score") is not None else None
            sv = decision_value(sa)[0] if sa is not None and sa.get("score") is not None else None
            missing = None
            if pc is None:
                missing = f"pc: {pc_skip.get(video, 'not scored for pc')}"
            elif sa is None:
                missing = f"sa: {sa_skip.get(video, 'not scored for sa')}"
            item = item_of(pc if pc is not None else sa)  # type: ignore[arg-type]
            pl, sl = item.get(pc_label), item.get(sa_label)
            pl = None if _is_missing(pl) else pl
            sl = None if _is_missing(sl) else sl
            records.append(
                {
                    "video": video,
                    "caption": ((sa or {}).get("item") or {}).get("prompt_fields", {}).get("caption"),
                    "pc_value": pv,
                    "sa_value": sv,
                    "pc_score": pc.get("score") if pc else None,
                    "sa_score": sa.get("score") if sa else None,
                    "pc_error": pc.get("parse_error") if pc else None,
                    "sa_error": sa.get("parse_error") if sa else None,
                    "pc_label": pl,
                    "sa_label": sl,
                    "joint": None if pv is None or sv is None else int(pv >= threshold and sv >= threshold),
                    "label_joint": None
                    if pl is None or sl is None
                    else int(float(pl) >= threshold and float(sl) >= threshold),
                    "missing": missing,
                }
            )
    return records


def decide_joint(record: dict[str, Any], threshold: float) -> tuple[str, float | None, str]:
    """(decision, value, reason) of a joint record: kept when its pc and its sa value are both at least the
    threshold (the value is the smaller of the two); ``skipped`` when one result is missing, ``unparsed`` when one
    answer could not be read."""
    if record.get("missing"):
        return "skipped", None, str(record["missing"])
    pv, sv = record.get("pc_value"), record.get("sa_value")
    if pv is None or sv is None:
        which = "pc" if pv is None else "sa"
        why = record.get(f"{which}_error") or "the critic gave no score"
        return "unparsed", None, f"{which}: {why}"
    value = min(pv, sv)
    verdict = "keep" if value >= threshold else "reject"
    sign = {True: ">=", False: "<"}
    reason = f"pc {pv:.3f} {sign[pv >= threshold]} {threshold:g}, sa {sv:.3f} {sign[sv >= threshold]} {threshold:g}"
    return verdict, value, reason


def write_joint_filter_outputs(
    records: Sequence[dict[str, Any]],
    skipped: Sequence[dict[str, Any]],
    out_dir: str | Path,
    threshold: float,
) -> FilterResult:
    """``predictions.csv`` / ``predictions.jsonl`` / ``manifest.csv`` for ``--keep-on joint``: one decision per clip
    from its pc and sa results (:func:`decide_joint`); clips skipped for both tasks are listed as skipped too."""

    if _is_missing(threshold):
        raise ConfigError("the threshold must be a number")
    out = claim_outputs(out_dir, FILTER_FILES)
    rows = []
    for r in records:
        decision, value, reason = decide_joint(r, threshold)
        rows.append(
            {
                "video": r["video"],
                "decision": decision,
                "value": value,
                "value_source": "joint" if value is not None else None,
                "score": None,
                "expected_score": None,
                "threshold": threshold,
                "reason": reason,
                **{k: r.get(k) for k in JOINT_COLUMNS},
                "caption": r.get("caption"),
            }
        )
    listed = {r["video"] for r in records}
    for s in skipped:
        if s["video"] not in listed:
            listed.add(s["video"])
            rows.append(skipped_record(s, threshold))
    return _write_decisions(rows, [*MANIFEST_COLUMNS, *JOINT_COLUMNS], out, threshold)
