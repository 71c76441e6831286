"""A self-contained HTML report of one or more critics' scores, and ``evaluation_results.json`` with every number in it.

The page holds: the summary metrics with bootstrap intervals (when the clips carry labels), a confusion-matrix heat-map
per critic, extra sections (tables and figures passed by the caller, e.g. detection rates per violation type), the
per-clip table (contact-sheet thumbnail, caption, label, each critic's score, p(1..5) bar, decision, raw output in a
collapsed ``<details>``) with filters by correctness, label and decision, and the lists of skipped and unparsed clips
with their reasons.

Everything is in one file: images are PNGs embedded as base64 ``data:`` URIs, the small filter script and the styles are
inline, nothing is fetched. All text (captions, file names, model outputs) goes through jinja2 with autoescape on, and
the script reads only ``data-`` attributes, so no clip or model output can inject markup.

Large runs (more than ``ReportConfig.page_limit`` clips) would make one page no browser opens, so the page then holds
the summary, the plots and the interesting clips only — the lowest and highest scores, the disagreements with the
labels, the skips and unparsed answers, and a seeded random sample — with their thumbnails as JPEG files in
``<report>_files/thumbs``; the full table is paged from ``<report>_files/table-NNNNN.js`` (one small script per page,
loaded on demand, which works from ``file://`` where ``fetch`` of local JSON does not).

The page is rendered from one dict (:attr:`ReportResult.data`), which is also what ``evaluation_results.json`` holds.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import dataclasses
import datetime as _dt
import hashlib
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment

from recipe_lib.constants import IN_MEMORY_ROWS
from recipe_lib.errors import RecipeError
from recipe_lib.evaluation.collapse import check_collapse
from recipe_lib.evaluation.filtering import DECISIONS, decide
from recipe_lib.evaluation.metrics import CONFUSION_COLUMNS, METRICS, SCORE_VALUES, MetricSuite
from recipe_lib.inference.record import item_of
from recipe_lib.io import atomic_write_json, atomic_write_text, claim_outputs

SUMMARY_METRICS = ("accuracy", "within1", "mae", "pearson", "spearman", "kendall", "qwk", "precision", "recall")
SUMMARY_METRICS += ("f1", "roc_auc")


@dataclasses.dataclass
class CriticScores:
    """One critic's scored rows for a report (``metrics`` None when the clips carry no labels)."""

    name: str
    model: str
    rows: Sequence[dict[str, Any]]  # a list, or a view of a large run's store (streamed, see sample_critic)
    skipped: Sequence[dict[str, Any]] = dataclasses.field(default_factory=list)
    metrics: MetricSuite | None = None
    groups: Any = None  # pandas.DataFrame from metrics.group_breakdown, optional
    # Set for a sampled report (:func:`sample_critic`): counts over every clip, while ``rows``/``skipped`` hold the
    # sample and ``why`` says which group each sampled clip is in.
    totals: dict[str, Any] | None = None
    why: dict[str, list[str]] | None = None


@dataclasses.dataclass
class ReportSection:
    """An extra block: a heading, a sentence, optionally a table (list of records) and/or a figure."""

    title: str
    text: str = ""
    table: list[dict[str, Any]] | None = None
    figure: Any = None  # matplotlib Figure


@dataclasses.dataclass
class ReportConfig:
    out_path: Path
    title: str = "Physical plausibility report"
    threshold: float = 4.0
    label_key: str = "pc"
    thumbnails: bool = True
    thumb_dir: Path | None = None  # cache of contact sheets; default: <report folder>/thumbs
    json_name: str = "evaluation_results.json"
    workers: int = 2
    subtitle: str = ""
    page_limit: int = 2000  # above this many clips: the interesting clips in the page, the full table paged beside it
    page_size: int = 1000  # rows per page of the full table (large reports)
    highlights: int = 100  # clips per highlight group (lowest, highest, disagreements, random) in a large report
    # Above this many clips (rows plus skips), or when the rows are not in memory (a run of more than IN_MEMORY_ROWS
    # clips streams them from its store), the paged table is not written: the report holds the counts, the metrics and
    # figures over every clip, and a bounded sample of ``highlights`` clips per group, chosen while the rows stream
    # past; the full table is scores.csv and manifest.csv.
    max_clips: int = 2 * IN_MEMORY_ROWS

    def output_names(self) -> list[str]:
        """The files (and the thumbnail folder) this report writes beside ``out_path``."""
        return [self.out_path.name, self.json_name] + (["thumbs"] if self.thumbnails and self.thumb_dir is None else [])


@dataclasses.dataclass
class ReportResult:
    html: Path
    json: Path
    data: dict[str, Any]


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def confusion_figure(suite: MetricSuite, title: str = "Confusion matrix"):  # noqa: ANN201
    """Heat-map of the 5x6 table (labels down, predicted 1-5 and unparsed across), counts written in the cells."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6, 3.6), layout="constrained")
    ax = fig.add_subplot()
    data = suite.confusion
    im = ax.imshow(data, cmap="Blues", aspect="auto", vmin=0)
    ax.set_xticks(range(6), list(CONFUSION_COLUMNS))
    ax.set_yticks(range(5), [str(v) for v in SCORE_VALUES])
    ax.set_xlabel("predicted")
    ax.set_ylabel("label")
    top = data.max() if data.size else 0
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            ax.text(
                j,
                i,
                str(int(data[i, j])),
                ha="center",
                va="center",
                fontsize=9,
                color="white" if top and data[i, j] > top * 0.6 else "black",
            )
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def _thumb(video: str, cache: Path, link_from: Path | None = None) -> tuple[str | None, str | None]:
    """(data URI, None) or (None, reason) for one clip's contact sheet; sheets are cached by file content. With
    ``link_from`` (a report's folder) the first item is the sheet's path relative to it instead of a data URI."""
    from recipe_lib.errors import VideoError
    from recipe_lib.video import contact_sheet

    path = Path(video)
    try:
        stat = path.stat()
    except OSError as exc:
        return None, f"no preview: {exc.strerror or exc}"
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:24]
    jpg = cache / f"{key}.jpg"
    try:
        if not jpg.exists():
            from PIL import Image

            png = contact_sheet(path, cache / f"{key}.png", n=4, tile_height=56)
            # JPEG keeps a report of thousands of clips to a few tens of kilobytes per clip.
            tmp = jpg.with_name(jpg.name + ".tmp")
            with Image.open(png) as img:
                img.convert("RGB").save(tmp, format="JPEG", quality=80)
            tmp.replace(jpg)
            png.unlink(missing_ok=True)
        if link_from is not None:
            return jpg.relative_to(link_from).as_posix(), None
        return _data_uri(jpg.read_bytes(), "image/jpeg"), None
    except VideoError as exc:
        return None, f"no preview: {exc.message}"


def _num(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        value = value.item()
    return value


def _fmt(value: Any, digits: int = 3) -> str:
    value = _num(value)
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _records(table: Any) -> list[dict[str, Any]]:
    if table is None:
        return []
    if hasattr(table, "to_dict"):
        table = table.to_dict(orient="records")
    return [{str(k): _num(v) for k, v in rec.items()} for rec in table]


def _sample_rows(critics: Sequence[CriticScores], cfg: ReportConfig) -> list[dict[str, Any]]:
    """One record per clip (union over critics, first-seen order), each with every critic's prediction."""
    order: list[str] = []
    info: dict[str, dict[str, Any]] = {}
    for ci, critic in enumerate(critics):
        for r in critic.rows:
            video = r["video"]
            if video not in info:
                order.append(video)
                item = item_of(r)
                label = _num(item.get(cfg.label_key))
                info[video] = {
                    "video": video,
                    "name": Path(video).name,
                    "caption": item.get("caption"),
                    "label": int(label) if label is not None else None,
                    "predictions": [None] * len(critics),
                }
            decision, value, source, reason = decide(r, cfg.threshold)
            label = info[video]["label"]
            score = r.get("score")
            if score is None:
                correct = "unparsed"
            elif label is None:
                correct = "unlabelled"
            else:
                correct = "correct" if int(score) == label else "wrong"
            trials = r.get("trials") or []
            raw = r.get("raw_output")
            if raw is None and trials:
                raw = trials[0].get("text")
            info[video]["predictions"][ci] = {
                "score": score,
                "expected_score": _num(r.get("expected_score")),
                "probs": [_num(p) for p in r["probs"]] if r.get("probs") else None,
                "trial_scores": [t.get("score") for t in trials],
                "decision": decision,
                "decision_reason": reason,
                "value": value,
                "correct": correct,
                "parse_error": r.get("parse_error"),
                "raw_output": raw,
                "model_s": _num((r.get("timing") or {}).get("model_s")),
            }
        for s in critic.skipped:
            video = s["video"]
            if video not in info:
                order.append(video)
                info[video] = {
                    "video": video,
                    "name": Path(video).name,
                    "caption": None,
                    "label": None,
                    "predictions": [None] * len(critics),
                }
            if info[video]["predictions"][ci] is not None:
                continue  # a repeated row of a clip that was scored: keep its prediction
            info[video]["predictions"][ci] = {
                "score": None,
                "expected_score": None,
                "probs": None,
                "trial_scores": [],
                "decision": "skipped",
                "decision_reason": s.get("reason"),
                "value": None,
                "correct": "skipped",
                "parse_error": None,
                "raw_output": None,
                "model_s": None,
            }
    samples = [info[v] for v in order]
    for s in samples:
        s["predictions"] = [
            p
            or {
                "score": None,
                "expected_score": None,
                "probs": None,
                "trial_scores": [],
                "decision": "skipped",
                "decision_reason": "not scored by this critic",
                "value": None,
                "correct": "skipped",
                "parse_error": None,
                "raw_output": None,
                "model_s": None,
            }
            for p in s["predictions"]
        ]
    return samples


def build_report_data(
    critics: Sequence[CriticScores], cfg: ReportConfig, sections: Sequence[ReportSection] = ()
) -> dict[str, Any]:
    """The dict the page is rendered from (and ``evaluation_results.json`` holds)."""
    samples = _sample_rows(critics, cfg)
    critic_data = []
    for critic in critics:
        if critic.totals is not None:
            critic_data.append(_sampled_critic_data(critic))
            continue
        decisions = {d: 0 for d in DECISIONS}
        unparsed = []
        for r in critic.rows:
            decision = decide(r, cfg.threshold)[0]
            decisions[decision] += 1
            if decision == "unparsed":
                unparsed.append(
                    {"video": r["video"], "reason": str(r.get("parse_error") or "the critic gave no score")}
                )
        decisions["skipped"] = len(critic.skipped)
        critic_data.append(
            {
                "name": critic.name,
                "model": critic.model,
                "n_scored": len(critic.rows),
                "n_skipped": len(critic.skipped),
                "decisions": decisions,
                "metrics": critic.metrics.to_dict() if critic.metrics is not None else None,
                "groups": _records(critic.groups),
                "skipped": [{"video": s["video"], "reason": s.get("reason", "skipped")} for s in critic.skipped],
                "unparsed": unparsed,
                "collapse": check_collapse(critic.rows, cfg.label_key).to_dict(),
            }
        )
    return {
        "title": cfg.title,
        "subtitle": cfg.subtitle,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "threshold": cfg.threshold,
        "label_key": cfg.label_key,
        "metric_descriptions": dict(METRICS),
        "critics": critic_data,
        "sections": [{"title": s.title, "text": s.text, "table": _records(s.table)} for s in sections],
        "samples": samples,
        "n_clips": len(samples),
        "n_labelled": sum(1 for s in samples if s["label"] is not None),
    }


def _sampled_critic_data(critic: CriticScores) -> dict[str, Any]:
    totals = critic.totals or {}
    return {
        "name": critic.name,
        "model": critic.model,
        "n_scored": totals["n_scored"],
        "n_skipped": totals["n_skipped"],
        "decisions": totals["decisions"],
        "metrics": critic.metrics.to_dict() if critic.metrics is not None else None,
        "groups": _records(critic.groups),
        "skipped": [{"video": s["video"], "reason": s.get("reason", "skipped")} for s in critic.skipped],
        "unparsed": totals["unparsed"],
        "collapse": totals["collapse"],
        "sampled": True,
    }


def sample_critic(critic: CriticScores, cfg: ReportConfig) -> CriticScores:
    """A critic's scores reduced to what a report of millions of clips shows, in one streamed pass: the counts of
    every decision, the collapse check and the first skips and unparsed answers over all clips, and a sample of at
    most ``cfg.highlights`` clips per group (lowest and highest value, the worst disagreements with the label, the
    unparsed, a seeded random sample). Only the sampled rows are held."""
    import heapq
    import random

    n = cfg.highlights
    rng = random.Random(0)
    decisions = dict.fromkeys(DECISIONS, 0)
    lowest: list[tuple[float, int, dict[str, Any]]] = []  # max-heap of the n lowest (negated values)
    highest: list[tuple[float, int, dict[str, Any]]] = []  # min-heap of the n highest
    wrong: list[tuple[float, int, dict[str, Any]]] = []  # min-heap of the n largest disagreements
    unparsed_rows: list[dict[str, Any]] = []
    unparsed: list[dict[str, Any]] = []
    reservoir: list[dict[str, Any]] = []
    n_rows = 0
    for i, r in enumerate(critic.rows):
        n_rows += 1
        decision, value, _, reason = decide(r, cfg.threshold)
        decisions[decision] += 1
        if decision == "unparsed":
            if len(unparsed) < cfg.page_limit:
                unparsed.append({"video": r["video"], "reason": reason})
            if len(unparsed_rows) < n:
                unparsed_rows.append(r)
        if value is not None:
            for heap, k in ((lowest, -value), (highest, value)):
                if len(heap) < n:
                    heapq.heappush(heap, (k, -i, r))
                elif k > heap[0][0]:
                    heapq.heapreplace(heap, (k, -i, r))
            label = _num(item_of(r).get(cfg.label_key))
            if label is not None and r.get("score") is not None and int(r["score"]) != int(label):
                gap = abs(value - float(label))
                if len(wrong) < n:
                    heapq.heappush(wrong, (gap, -i, r))
                elif gap > wrong[0][0]:
                    heapq.heapreplace(wrong, (gap, -i, r))
        if len(reservoir) < n:  # reservoir sampling: every row has the same chance, whatever the run's length
            reservoir.append(r)
        else:
            j = rng.randrange(i + 1)
            if j < n:
                reservoir[j] = r
    skipped: list[dict[str, Any]] = []
    n_skipped = 0
    for s in critic.skipped:
        n_skipped += 1
        if len(skipped) < cfg.page_limit:
            skipped.append(s)
    decisions["skipped"] = n_skipped
    groups = {
        "lowest score": [r for _, _, r in sorted(lowest, key=lambda e: (-e[0], -e[1]))],
        "highest score": [r for _, _, r in sorted(highest, key=lambda e: (-e[0], -e[1]))],
        "disagrees with its label": [r for _, _, r in sorted(wrong, key=lambda e: (-e[0], -e[1]))],
        "unparsed": unparsed_rows,
        "random sample": reservoir,
    }
    why: dict[str, list[str]] = {}
    rows: list[dict[str, Any]] = []
    for group, members in groups.items():
        for r in members:
            if r["video"] not in why:
                why[r["video"]] = []
                rows.append(r)
            why[r["video"]].append(group)
    for s in skipped[:n]:
        why.setdefault(s["video"], []).append("skipped")
    collapse_dict = check_collapse(critic.rows, cfg.label_key).to_dict()  # two more streamed passes
    totals = {
        "n_scored": n_rows,
        "n_skipped": n_skipped,
        "decisions": decisions,
        "unparsed": unparsed,
        "collapse": collapse_dict,
    }
    return dataclasses.replace(critic, rows=rows, skipped=skipped[:n], totals=totals, why=why)


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ d.title }}</title>
<style>
body{font-family:system-ui,-apple-system,sans-serif;margin:1.5em auto;max-width:1300px;padding:0 1em;color:#222}
h1{margin-bottom:.1em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}.muted{color:#666;font-size:.9em}
table{border-collapse:collapse;margin:.5em 0;font-size:.88em}th,td{border:1px solid #ddd;padding:3px 6px;
vertical-align:top}th{background:#f4f4f4;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ci{color:#777;font-size:.85em}.figs{display:flex;flex-wrap:wrap;gap:1em}.figs figure{margin:0}
figcaption{font-size:.85em;color:#444}
tr.sample td{font-size:.85em}.thumb{display:block;max-width:260px;height:auto}
.fname{max-width:260px;word-break:break-all;font-size:.9em}
.bar{display:inline-flex;align-items:flex-end;height:32px;gap:2px;border-bottom:1px solid #999}
.bar span{display:inline-block;width:9px;background:#4c72b0}.bar span.top{background:#c44e52}
.keep{color:#2a7d2a;font-weight:600}.reject{color:#b03030;font-weight:600}.unparsed,.skipped{color:#a06000;
font-weight:600}pre{white-space:pre-wrap;max-width:420px;max-height:240px;overflow:auto;background:#f7f7f7;
padding:4px;margin:2px 0}.filters{position:sticky;top:0;background:#fff;padding:.4em 0;z-index:1;
border-bottom:1px solid #eee}.filters label{margin-right:1em}.caption{max-width:300px}
.warn{background:#fff4e0;border-left:4px solid #e08a00;padding:.4em .7em}
</style></head>
<body>
<h1>{{ d.title }}</h1>
{% if d.subtitle %}<p>{{ d.subtitle }}</p>{% endif %}
<p class="muted">{{ d.n_clips }} clips ({{ d.n_labelled }} labelled) · threshold {{ d.threshold }} (keep when the
expected score, else the score, is at least this) · created {{ d.created }}</p>

<h2>Summary</h2>
<table id="decisions"><tr><th>critic</th><th>model</th>{% for k in decisions %}<th>{{ k }}</th>{% endfor %}</tr>
{% for c in d.critics %}<tr><td>{{ c.name }}</td><td>{{ c.model }}</td>
{% for k in decisions %}<td class="num">{{ c.decisions[k] }}</td>{% endfor %}</tr>{% endfor %}</table>
{% for c in d.critics %}{% if c.collapse.warning %}<p class="warn collapse">&#9888; {{ c.name }}:
{{ c.collapse.warning }}</p>{% endif %}{% endfor %}

{% if has_metrics %}
<table id="metrics"><tr><th>metric</th>{% for c in d.critics %}<th>{{ c.name }}</th>{% endfor %}<th>meaning</th></tr>
<tr><td>n (labelled)</td>{% for c in d.critics %}<td class="num">{{ c.metrics.n if c.metrics else "–" }}</td>
{% endfor %}<td>clips with a label</td></tr>
<tr><td>parse coverage</td>{% for c in d.critics %}<td class="num">{{ fmt(c.metrics.coverage) if c.metrics else "–" }}
</td>{% endfor %}<td>share of labelled clips with a parsed score</td></tr>
{% for m in summary_metrics %}<tr><td>{{ m }}</td>{% for c in d.critics %}<td class="num">
{% if c.metrics %}{{ fmt(c.metrics.metrics[m]) }} <span class="ci">[{{ fmt(c.metrics.intervals[m][0]) }},
{{ fmt(c.metrics.intervals[m][1]) }}]</span>{% else %}–{% endif %}</td>{% endfor %}
<td>{{ d.metric_descriptions[m] }}</td></tr>{% endfor %}
<tr><td>majority baseline</td>{% for c in d.critics %}<td class="num">
{{ fmt(c.metrics.majority_accuracy) if c.metrics else "–" }}</td>{% endfor %}
<td>accuracy of always answering the most common label</td></tr>
</table>
<p class="muted">Brackets: {{ confidence }} % bootstrap interval ({{ resamples }} resamples of the clips, seeded
{%- if resampling != "clips" %}; drawn as {{ resampling }}{% endif %}).
Good vs bad: label and score at least {{ d.threshold }}.</p>
<h2>Confusion matrices</h2>
<div class="figs">{% for c in d.critics %}{% if confusion[loop.index0] %}<figure>
<img alt="confusion matrix of {{ c.name }}" src="{{ confusion[loop.index0] }}">
<figcaption>{{ c.name }}: labels down, predictions across; "unparsed" counts answers without a score.</figcaption>
</figure>{% endif %}{% endfor %}</div>
{% endif %}

{% for s in d.sections %}<h2>{{ s.title }}</h2>{% if s.text %}<p>{{ s.text }}</p>{% endif %}
{% if s.table %}<table class="section"><tr>{% for k in s.table[0].keys() %}<th>{{ k }}</th>{% endfor %}</tr>
{% for r in s.table %}<tr>{% for v in r.values() %}<td class="num">{{ fmt(v) }}</td>{% endfor %}</tr>{% endfor %}
</table>{% endif %}
{% if section_figs[loop.index0] %}<figure><img alt="{{ s.title }}" src="{{ section_figs[loop.index0] }}"></figure>
{% endif %}{% endfor %}

{% for c in d.critics %}{% if c.groups %}<h2>Per group: {{ c.name }}</h2>
<table class="groups"><tr><th>column</th><th>group</th><th>n</th><th>coverage</th>{% for m in group_metrics %}
<th>{{ m }}</th>{% endfor %}</tr>{% for g in c.groups %}<tr><td>{{ g.column }}</td><td>{{ g.group }}</td>
<td class="num">{{ g.n }}</td><td class="num">{{ fmt(g.coverage) }}</td>{% for m in group_metrics %}
<td class="num">{{ fmt(g[m]) }} <span class="ci">[{{ fmt(g[m ~ "_lo"]) }}, {{ fmt(g[m ~ "_hi"]) }}]</span></td>
{% endfor %}</tr>{% endfor %}</table>{% endif %}{% endfor %}

<h2>Clips</h2>
{% if sampled %}<p>{{ d.n_clips }} clips: too many for one page or a table beside it, so this report holds a bounded
sample of {{ shown|length }} clips, at most {{ d.sampled.per_group }} per group — the lowest and highest scores, the
worst disagreements with the labels, the unparsed answers, the first skipped clips and a seeded random sample (column
"why"). The counts, metrics and figures above are over every clip; every clip is in scores.csv and manifest.csv
beside this page.</p>{% elif large %}<p>{{ d.n_clips }} clips: shown here are {{ shown|length }} of them — the lowest
and highest scores, the disagreements with the labels, the skipped and unparsed clips and a random sample (column
"why"). Every clip is in the <a href="#all">full table</a> below, and in {{ json_name }}.</p>{% endif %}
<div class="filters" id="filters">
{% if d.critics|length > 1 %}<label>critic <select id="f-critic">{% for c in d.critics %}
<option value="{{ loop.index0 }}">{{ c.name }}</option>{% endfor %}</select></label>{% endif %}
<label>correctness <select id="f-correct"><option value="">all</option><option value="correct">correct</option>
<option value="wrong">wrong</option><option value="unparsed">unparsed</option><option value="skipped">skipped</option>
<option value="unlabelled">unlabelled</option></select></label>
<label>label <select id="f-label"><option value="">all</option>{% for v in scores %}
<option value="{{ v }}">{{ v }}</option>{% endfor %}<option value="none">none</option></select></label>
<label>decision <select id="f-decision"><option value="">all</option>{% for k in decisions %}
<option value="{{ k }}">{{ k }}</option>{% endfor %}</select></label>
<span class="muted">showing <span id="shown">{{ shown|length }}</span> of {{ shown|length }}</span>
</div>
<table id="samples"><thead><tr><th>clip</th>{% if large %}<th>why</th>{% endif %}<th>caption</th><th>label</th>
{% for c in d.critics %}<th>{{ c.name }}</th>{% endfor %}</tr></thead><tbody>
{% for s in shown %}<tr class="sample" data-label="{{ s.label if s.label is not none else 'none' }}"
{% for p in s.predictions %} data-correct-{{ loop.index0 }}="{{ p.correct }}"
 data-decision-{{ loop.index0 }}="{{ p.decision }}"{% endfor %}>
<td>{% if thumbs[s.video] %}<img class="thumb" alt="frames of {{ s.name }}" src="{{ thumbs[s.video] }}">
{% else %}<span class="muted">{{ thumb_errors[s.video] }}</span>{% endif %}<div class="fname">{{ s.name }}</div></td>
{% if large %}<td>{{ s.why|join(", ") }}</td>{% endif %}
<td class="caption">{{ s.caption if s.caption is not none else "" }}</td>
<td class="num">{{ s.label if s.label is not none else "–" }}</td>
{% for p in s.predictions %}<td><div><b>{{ p.score if p.score is not none else "–" }}</b>
{% if p.expected_score is not none %}<span class="muted">(E={{ fmt(p.expected_score, 2) }})</span>{% endif %}
<span class="{{ p.decision }}">{{ p.decision }}</span> <span class="muted">{{ p.correct }}</span></div>
{% if p.probs %}<div class="bar" title="p(1..5)">{% for q in p.probs %}<span
 class="{{ 'top' if loop.index == p.score else '' }}" style="height:{{ (q * 30 + 1)|round(1) }}px"
 title="p({{ loop.index }}) = {{ fmt(q) }}"></span>{% endfor %}</div>
<div class="muted">p(1..5): {% for q in p.probs %}{{ fmt(q, 2) }} {% endfor %}</div>{% endif %}
{% if p.trial_scores %}<div class="muted">trials: {% for t in p.trial_scores %}{{ t if t is not none else "?" }}
{% endfor %}</div>{% endif %}
{% if p.parse_error or p.decision == "skipped" %}<div class="muted">{{ p.parse_error or p.decision_reason }}</div>
{% endif %}
{% if p.raw_output is not none %}<details><summary>raw output</summary><pre>{{ p.raw_output }}</pre></details>
{% endif %}</td>{% endfor %}</tr>{% endfor %}
</tbody></table>

{% if large and pages %}<h2 id="all">All {{ d.n_clips }} clips</h2>
<p class="pager"><button id="prev" type="button">previous</button> page <input id="page" type="number" min="1"
 max="{{ pages }}" value="1"> of {{ pages }} <button id="next" type="button">next</button>
<span class="muted">{{ page_size }} clips a page; {{ d.critics[0].name }}'s scores</span></p>
<table id="all-table"><thead><tr><th>clip</th><th>label</th><th>score</th><th>expected</th><th>decision</th>
<th>correctness</th></tr></thead><tbody id="all-rows"></tbody></table>
<script>
(function () {
  var pages = {{ pages }}, current = 0, body = document.getElementById("all-rows");
  var input = document.getElementById("page");
  window.reportPage = function (n, rows) {
    if (n !== current) { return; }
    var frag = document.createDocumentFragment();
    rows.forEach(function (r) {
      var tr = document.createElement("tr");
      r.forEach(function (v) {
        var td = document.createElement("td");
        td.textContent = v === null ? "\u2013" : String(v);
        tr.appendChild(td);
      });
      frag.appendChild(tr);
    });
    body.textContent = "";
    body.appendChild(frag);
    document.getElementById("all-table").setAttribute("data-page", String(n + 1));
  };
  function show(n) {
    current = Math.max(0, Math.min(pages - 1, n));
    input.value = String(current + 1);
    var s = document.createElement("script");
    s.src = "{{ files }}/table-" + String(current).padStart(5, "0") + ".js";
    document.body.appendChild(s);
  }
  document.getElementById("prev").addEventListener("click", function () { show(current - 1); });
  document.getElementById("next").addEventListener("click", function () { show(current + 1); });
  input.addEventListener("change", function () { show(parseInt(input.value, 10) - 1); });
  show(0);
})();
</script>{% endif %}

<h2>Skipped and unparsed clips</h2>
{% for c in d.critics %}<h3>{{ c.name }}</h3>
{% if c.skipped or c.unparsed %}<ul class="problems">{% for s in c.skipped[:problem_limit] %}<li><b>skipped</b>
{{ s.video }}: {{ s.reason }}</li>{% endfor %}{% for s in c.unparsed[:problem_limit] %}<li><b>unparsed</b>
{{ s.video }}: {{ s.reason }}</li>{% endfor %}</ul>
{% if c.sampled %}<p class="muted">{{ c.decisions.skipped }} skipped and {{ c.decisions.unparsed }} unparsed in all;
the first {{ c.skipped|length }} skipped and {{ c.unparsed[:problem_limit]|length }} unparsed are listed; all of them
are in skipped.jsonl and manifest.csv.</p>
{% elif problem_limit and (c.skipped|length > problem_limit or c.unparsed|length > problem_limit) %}<p class="muted">
the first {{ problem_limit }} of each are listed; all of them are in {{ json_name }} and skipped.jsonl.</p>
{% endif %}{% else %}<p class="muted">none: every clip was read and every answer parsed.</p>{% endif %}
{% endfor %}
<p class="muted">Every number on this page is also in {{ json_name }}.</p>
<script>
(function () {
  var ids = ["f-critic", "f-correct", "f-label", "f-decision"];
  function value(id) { var el = document.getElementById(id); return el ? el.value : ""; }
  function apply() {
    var critic = value("f-critic") || "0", correct = value("f-correct"), label = value("f-label");
    var decision = value("f-decision"), shown = 0;
    var rows = document.querySelectorAll("tr.sample");
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      var ok = (!correct || r.getAttribute("data-correct-" + critic) === correct) &&
               (!label || r.getAttribute("data-label") === label) &&
               (!decision || r.getAttribute("data-decision-" + critic) === decision);
      r.style.display = ok ? "" : "none";
      if (ok) { shown++; }
    }
    document.getElementById("shown").textContent = String(shown);
  }
  ids.forEach(function (id) {
    var el = document.getElementById(id);
    if (el) { el.addEventListener("change", apply); }
  });
  // A link can preset the filters: report.html#correct=wrong&label=5 (keys: critic, correct, label, decision).
  var params = new URLSearchParams(window.location.hash.slice(1));
  params.forEach(function (v, k) {
    var el = document.getElementById("f-" + k);
    if (el && Array.prototype.some.call(el.options, function (o) { return o.value === v; })) { el.value = v; }
  });
  apply();
})();
</script>
</body></html>
"""

GROUP_TABLE_METRICS = ("accuracy", "within1", "mae", "pearson", "f1", "roc_auc")


def _thumbnails(
    videos: list[str], cfg: ReportConfig, as_files: bool = False
) -> tuple[dict[str, str | None], dict[str, str | None]]:
    uris: dict[str, str | None] = {v: None for v in videos}
    errors: dict[str, str | None] = {v: "no preview" for v in videos}
    if not cfg.thumbnails or not videos:
        return uris, errors
    folder = cfg.out_path.parent
    cache = files_dir(cfg) / "thumbs" if as_files else cfg.thumb_dir or folder / "thumbs"
    cache.mkdir(parents=True, exist_ok=True)
    link = folder.resolve() if as_files else None
    cache = cache.resolve() if as_files else cache
    with cf.ThreadPoolExecutor(max_workers=max(1, cfg.workers)) as pool:
        for video, (uri, err) in zip(videos, pool.map(lambda v: _thumb(v, cache, link), videos)):
            uris[video], errors[video] = uri, err
    return uris, errors


def files_dir(cfg: ReportConfig) -> Path:
    """The folder beside a large report that holds its thumbnails and table pages."""
    return cfg.out_path.with_name(cfg.out_path.stem + "_files")


def highlight_samples(samples: list[dict[str, Any]], cfg: ReportConfig) -> list[dict[str, Any]]:
    """The clips a large report shows in the page, each with ``why`` (the groups it is in), in a stable order:
    lowest and highest scores, the worst disagreements with the labels, skips, unparsed answers, a random sample."""
    import random

    n = cfg.highlights
    scored = [s for s in samples if s["predictions"][0]["value"] is not None]
    by_value = sorted(scored, key=lambda s: s["predictions"][0]["value"])
    wrong = [s for s in scored if s["predictions"][0]["correct"] == "wrong"]
    wrong.sort(key=lambda s: -abs(s["predictions"][0]["value"] - s["label"]))
    groups = {
        "lowest score": by_value[:n],
        "highest score": by_value[::-1][:n],
        "disagrees with its label": wrong[:n],
        "skipped": [s for s in samples if s["predictions"][0]["decision"] == "skipped"][:n],
        "unparsed": [s for s in samples if s["predictions"][0]["decision"] == "unparsed"][:n],
        "random sample": random.Random(0).sample(samples, min(n, len(samples))),
    }
    chosen: dict[str, dict[str, Any]] = {}
    for why, group in groups.items():
        for s in group:
            entry = chosen.setdefault(s["video"], {**s, "why": []})
            entry["why"].append(why)
    return list(chosen.values())


def _page_row(s: dict[str, Any]) -> list[Any]:
    p = s["predictions"][0]
    e = p["expected_score"]
    return [s["name"], s["label"], p["score"], round(e, 3) if e is not None else None, p["decision"], p["correct"]]


def write_table_pages(samples: list[dict[str, Any]], cfg: ReportConfig) -> int:
    """The full table of a large report as ``table-NNNNN.js`` pages beside it; returns the number of pages."""
    import json

    folder = files_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    size = max(1, cfg.page_size)
    pages = max(1, math.ceil(len(samples) / size))
    for i in range(pages):
        rows = [_page_row(s) for s in samples[i * size : (i + 1) * size]]
        # JSON inside a script: "<" is escaped so no file name can close the script element.
        body = json.dumps(rows, ensure_ascii=True).replace("<", "\\u003c")
        atomic_write_text(folder / f"table-{i:05d}.js", f"window.reportPage({i}, {body});\n")
    return pages


def write_report(
    critics: Sequence[CriticScores],
    cfg: ReportConfig,
    sections: Sequence[ReportSection] = (),
    extra: dict[str, Any] | None = None,
) -> ReportResult:
    """Render the report to ``cfg.out_path`` and the numbers to ``<same folder>/<cfg.json_name>`` (atomically).

    ``extra`` adds keys to the JSON only (e.g. the full threshold curves drawn in a section's figure)."""
    if not critics:
        raise RecipeError("a report needs at least one critic's scores")
    claim_outputs(cfg.out_path.parent, cfg.output_names())
    sampled = any(
        len(c.rows) + len(c.skipped) > cfg.max_clips or not (isinstance(c.rows, list) and isinstance(c.skipped, list))
        for c in critics
    )
    if sampled:
        critics = [sample_critic(c, cfg) for c in critics]
    data = build_report_data(critics, cfg, sections)
    if sampled:
        # The page and the JSON hold the sample; the counts are over every clip.
        why = {v: groups for c in critics for v, groups in (c.why or {}).items()}
        shown = [{**s, "why": why.get(s["video"], [])} for s in data["samples"]]
        data["n_clips"] = max(c["n_scored"] + c["n_skipped"] for c in data["critics"])
        data["sampled"] = {
            "clips_in_sample": len(shown),
            "per_group": cfg.highlights,
            "note": "a report of this many clips holds a bounded sample; every clip is in scores.csv and manifest.csv",
        }
        large, pages = True, 0
    else:
        large = len(data["samples"]) > cfg.page_limit
        shown = highlight_samples(data["samples"], cfg) if large else data["samples"]
        pages = write_table_pages(data["samples"], cfg) if large else 0
    thumbs, thumb_errors = _thumbnails([s["video"] for s in shown], cfg, as_files=large)
    confusion = []
    for critic in critics:
        if critic.metrics is not None and critic.metrics.n:
            confusion.append(_data_uri(figure_png(confusion_figure(critic.metrics, critic.name))))
        else:
            confusion.append(None)
    section_figs = [_data_uri(figure_png(s.figure)) if s.figure is not None else None for s in sections]
    first = next((c.metrics for c in critics if c.metrics is not None), None)
    env = Environment(autoescape=True)
    html = env.from_string(_TEMPLATE).render(
        d=data,
        fmt=_fmt,
        decisions=DECISIONS,
        scores=SCORE_VALUES,
        summary_metrics=SUMMARY_METRICS,
        group_metrics=GROUP_TABLE_METRICS,
        has_metrics=any(c.metrics is not None and c.metrics.n for c in critics),
        confidence=round(100 * first.confidence) if first else 95,
        resamples=first.n_boot if first else 0,
        resampling=first.bootstrap_method if first else "clips",
        confusion=confusion,
        section_figs=section_figs,
        thumbs=thumbs,
        thumb_errors=thumb_errors,
        json_name=cfg.json_name,
        shown=shown,
        large=large,
        pages=pages,
        page_size=cfg.page_size,
        files=files_dir(cfg).name,
        problem_limit=cfg.page_limit if large else None,
        sampled=sampled,
    )
    out = atomic_write_text(cfg.out_path, html)
    if extra:
        data = {**data, **extra}
    json_path = atomic_write_json(out.with_name(cfg.json_name), data, indent=1)
    return ReportResult(html=out, json=json_path, data=data)
