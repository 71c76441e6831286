"""Figures of training runs (every function returns a matplotlib Figure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (shorter at the start, so the curve starts at step one)."""
    v = np.asarray(values, dtype=float)
    if not len(v):
        return v
    csum = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(0, idx - window)
    return (csum[idx] - csum[lo]) / (idx - lo)


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in pairs], [float(p[1]) for p in pairs]


def plot_sft_history(history: Sequence[dict[str, Any]], evals: Sequence[dict[str, Any]] = (), title: str | None = None):  # noqa: ANN201
    """Training loss on the answer tokens (raw and smoothed) and held-out accuracy at each evaluation."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    steps, loss = _series(history, "loss")
    ax_loss.plot(steps, loss, color="#4c72b0", alpha=0.3, linewidth=0.8, label="per step")
    if loss:
        ax_loss.plot(steps, moving_average(loss, max(1, len(loss) // 20)), color="#4c72b0", label="moving mean")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel("cross-entropy on answer tokens")
    ax_loss.set_title("training loss")
    ax_loss.legend(fontsize=8)
    e_steps, acc = _series(evals, "accuracy")
    ax_acc.plot(e_steps, acc, "o-", color="#55a868", label="held-out accuracy")
    majority = [r.get("majority_accuracy") for r in evals if r.get("majority_accuracy") is not None]
    if majority:
        ax_acc.axhline(majority[0], linestyle="--", color="grey", linewidth=1, label="majority class")
    ax_acc.set_xlabel("optimizer step")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1)
    ax_acc.set_title("evaluation during training")
    ax_acc.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_grpo_history(history: Sequence[dict[str, Any]], title: str | None = None):  # noqa: ANN201
    """Mean reward per step (raw and smoothed), the share of groups with signal, KL to the reference and the share of
    parsable answers (the clip share is in the history and the metrics; it stays 0 with one inner iteration)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 6.4), layout="constrained")
    axes = fig.subplots(2, 2)
    panels = (
        ("reward_mean", "mean reward of the sampled answers", None),
        ("signal_fraction", "groups with non-zero advantage", (0, 1.05)),
        ("kl", "KL to the reference (k3, per token)", None),
        ("parsed_fraction", "answers with a parsable score", (0, 1.05)),
    )
    for ax, (key, label, ylim) in zip(axes.flat, panels):
        steps, values = _series(history, key)
        ax.plot(steps, values, color="#4c72b0", alpha=0.35, linewidth=0.8, label="per step")
        if values:
            ax.plot(steps, moving_average(values, max(1, len(values) // 10)), color="#c44e52", label="moving mean")
        ax.set_xlabel("step")
        ax.set_title(label, fontsize=10)
        if ylim:
            ax.set_ylim(*ylim)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig
