"""Which samples each optimizer step takes: deterministic in (data, seed, step), so a resumed run continues the same
sequence.

``shuffle``: a seeded permutation per epoch, consecutive slices of it per step. ``balanced`` (``[local] batch_order``):
every batch holds the labels in equal shares (:func:`balanced_batches`).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def steps_per_epoch(n_samples: int, batch: int) -> int:
    """Optimizer steps in one pass over the data (a last partial batch is dropped when a full one exists)."""
    return max(1, n_samples // batch)


def epoch_order(n: int, epoch: int, seed: int, shuffle: bool) -> np.ndarray:
    """The sample order of one epoch: a permutation seeded by (seed, epoch), so a resumed run sees the same order."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_for_step(step: int, n: int, batch: int, seed: int, shuffle: bool) -> list[int]:
    per_epoch = steps_per_epoch(n, batch)
    epoch, pos = divmod(step, per_epoch)
    order = epoch_order(n, epoch, seed, shuffle)
    size = min(batch, n)
    return [int(i) for i in order[pos * size : pos * size + size]]


def balanced_batches(labels: list[Any], total_steps: int, batch: int, seed: int) -> list[list[int]]:
    """Batches in which every label has an equal share (round-robin over the labels, rotating which label gets the
    remainder). Each label's samples are drawn in seeded permutations, reshuffled when used up, so rare labels are
    repeated more often. Deterministic in (labels, seed): a resumed run continues the same sequence."""
    rng = np.random.default_rng([seed, 7])
    pools: dict[Any, list[int]] = {}
    for i, label in enumerate(labels):
        pools.setdefault(label, []).append(i)
    keys = sorted(pools, key=str)
    queues: dict[Any, list[int]] = {k: [] for k in keys}
    out = []
    for step in range(total_steps):
        chosen = []
        for slot in range(batch):
            key = keys[(slot + step) % len(keys)]
            if not queues[key]:
                queues[key] = [int(i) for i in rng.permutation(pools[key])]
            chosen.append(queues[key].pop())
        out.append(chosen)
    return out
