"""Saving ``datasets`` folders without the library's per-save progress bars (``Saving the dataset (1/1 shards)``):
a stage prints its own one-line account, and a bar per small save is noise in ``make demo``'s log and in notebooks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def dataset_bars_off() -> Iterator[None]:
    """``datasets``' progress bars off inside the block, as they were afterwards."""
    import datasets

    were_off = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not were_off:
            datasets.enable_progress_bars()


def save_dataset(dataset: Any, path: str | Path) -> None:
    """``dataset.save_to_disk(path)`` without progress bars."""
    with dataset_bars_off():
        dataset.save_to_disk(str(path))
