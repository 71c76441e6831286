"""Figures for the notebooks and reports. Every function returns a matplotlib Figure (never calls ``show``), so the
figure appears in the executed notebook whatever the backend, and can be saved by the caller."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SCORES = (1, 2, 3, 4, 5)


def _figure(width: float = 5.0, height: float = 3.5):  # noqa: ANN202
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def label_histogram(labels: Sequence[int], title: str = "Label distribution", ax_label: str = "pc (1-5)"):  # noqa: ANN201
    fig, ax = _figure()
    counts = [int(np.sum(np.asarray(labels) == s)) for s in SCORES]
    bars = ax.bar([str(s) for s in SCORES], counts, color="#4c72b0")
    ax.bar_label(bars)
    ax.set_xlabel(ax_label)
    ax.set_ylabel("clips")
    ax.set_title(title)
    return fig


def score_histogram(scores: Sequence[int | None], labels: Sequence[int] | None = None, title: str = "Scores"):  # noqa: ANN201
    """Predicted scores (and labels side by side when given); unparsed answers get their own bar."""
    fig, ax = _figure()
    x = np.arange(len(SCORES) + 1)
    names = [str(s) for s in SCORES] + ["unparsed"]
    pred = [sum(1 for s in scores if s == k) for k in SCORES] + [sum(1 for s in scores if s is None)]
    width = 0.4 if labels is not None else 0.8
    ax.bar(x - (width / 2 if labels is not None else 0), pred, width, label="critic", color="#dd8452")
    if labels is not None:
        true = [sum(1 for s in labels if s == k) for k in SCORES] + [0]
        ax.bar(x + width / 2, true, width, label="human label", color="#4c72b0")
        ax.legend()
    ax.set_xticks(x, names)
    ax.set_ylabel("clips")
    ax.set_title(title)
    return fig


def predicted_vs_true(labels: Sequence[int], predicted: Sequence[float | None], title: str = "Predicted vs true"):  # noqa: ANN201
    """Jittered scatter of the critic's (expected) score against the label, with per-label means."""
    fig, ax = _figure()
    rng = np.random.default_rng(0)
    pairs = [(int(t), float(p)) for t, p in zip(labels, predicted) if p is not None]
    if pairs:
        t, p = map(np.asarray, zip(*pairs))
        ax.scatter(t + rng.uniform(-0.15, 0.15, len(t)), p, s=14, alpha=0.6, color="#4c72b0", label="clip")
        means = [(s, p[t == s].mean()) for s in SCORES if np.any(t == s)]
        ax.plot([m[0] for m in means], [m[1] for m in means], "o-", color="#c44e52", label="mean per label")
    ax.plot([1, 5], [1, 5], "--", color="grey", linewidth=1, label="perfect")
    ax.set_xlim(0.5, 5.5)
    ax.set_ylim(0.5, 5.5)
    ax.set_xlabel("human label")
    ax.set_ylabel("critic score")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    return fig


def counts_table_figure(table: Any, title: str):  # noqa: ANN201
    """A heat-map of a small count table (pandas crosstab)."""
    fig, ax = _figure(6, 0.4 * len(table) + 1.5)
    data = table.to_numpy()
    ax.imshow(data, cmap="Blues", aspect="auto")
    ax.set_xticks(range(data.shape[1]), [str(c) for c in table.columns], rotation=30, ha="right")
    ax.set_yticks(range(data.shape[0]), [str(i) for i in table.index])
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            ax.text(j, i, str(data[i, j]), ha="center", va="center", fontsize=8)
    ax.set_title(title)
    return fig


def image_grid(images: Sequence[Any], titles: Sequence[str], columns: int = 2, title: str | None = None):  # noqa: ANN201
    """Show PNG contact sheets (paths or arrays) in a grid with titles."""
    from matplotlib.figure import Figure
    from PIL import Image

    rows = max(1, (len(images) + columns - 1) // columns)
    fig = Figure(figsize=(4.5 * columns, 1.6 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, name in zip(axes.flat, images, titles):
        ax.imshow(np.asarray(Image.open(img)) if not isinstance(img, np.ndarray) else img)
        ax.set_title(name, fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def published_lines(ax: Any, metric: str, stages: Sequence[str] | None = None, fontsize: int = 7) -> int:
    """Draw the published figures for ``metric`` (:data:`recipe_lib.constants.PUBLISHED`) as labelled dotted lines,
    each label naming the critic, the step and the source; returns how many were drawn."""
    from recipe_lib.constants import published

    colours = ("#8172b3", "#55a868", "#c44e52", "#937860", "#da8bc3", "#64b5cd")
    refs = [p for p in published(metric) if stages is None or p.stage in stages]
    for p, colour in zip(refs, colours):
        step = f" step {p.step}" if p.step is not None else ""
        label = f"published {p.critic} {p.label}{step}: {p.value:.3f} ({p.cite})"
        ax.axhline(p.value, linestyle=":", color=colour, linewidth=1.2, label=label)
    return len(refs)


def published_comparison(table: Any, metrics: Sequence[str] = ("accuracy", "pearson")):  # noqa: ANN201
    """One panel per metric: a bar per critic of an evaluation's comparison table (index = critic name) with the
    published figures drawn across it (:func:`published_lines`)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * len(metrics), 3.8), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    names = [str(n) for n in getattr(table, "index", [])]
    for ax, metric in zip(axes, metrics):
        values = [float(v) for v in table[metric]] if metric in getattr(table, "columns", []) else []
        ax.bar(names, np.nan_to_num(values, nan=0.0), color="#4c72b0", label="this evaluation")
        published_lines(ax, metric)
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.tick_params(axis="x", labelrotation=20)
        ax.legend(fontsize=6, loc="best")
    fig.supxlabel("dotted lines: published figures on VideoPhy-2 (real 7B critics, not this model or data)", fontsize=8)
    return fig
