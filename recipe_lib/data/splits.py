"""Label tools: stratified train/eval split (seeded). Extended by the data pipeline (balancing, scaling)."""

from __future__ import annotations

from typing import Any

from recipe_lib.errors import DataError


def stratified_split(ds: Any, eval_size: float = 0.1, seed: int = 42, label_column: str = "pc") -> tuple[Any, Any]:
    """Split a ``datasets.Dataset`` so every label keeps its share in both parts.

    Raises :class:`DataError` naming the label when a label has too few clips to appear in both splits.
    """
    from collections import Counter

    import numpy as np

    if not 0 < eval_size < 1:
        raise DataError(f"eval_size must be between 0 and 1, got {eval_size}")
    if label_column not in ds.column_names:
        raise DataError(f"no '{label_column}' column to stratify on", hint=f"columns: {', '.join(ds.column_names)}")
    labels = list(ds[label_column])
    counts = Counter(labels)
    thin = sorted(k for k, c in counts.items() if c < 2)
    if thin:
        raise DataError(
            f"label(s) {thin} have fewer than 2 clips, so they cannot appear in both train and eval",
            hint="add clips with those labels, merge labels, or drop them before splitting",
        )
    rng = np.random.default_rng(seed)
    eval_idx: list[int] = []
    for label in sorted(counts, key=str):
        idx = np.array([i for i, v in enumerate(labels) if v == label])
        rng.shuffle(idx)
        k = min(max(1, int(round(len(idx) * eval_size))), len(idx) - 1)
        eval_idx.extend(int(i) for i in idx[:k])
    chosen = set(eval_idx)
    train_idx = [i for i in range(len(labels)) if i not in chosen]
    return ds.select(train_idx), ds.select(sorted(eval_idx))
