"""Per-step scalars to ``history.jsonl`` / ``eval.jsonl`` and TensorBoard; a wall-clock timer."""

from __future__ import annotations

import math
import time

from recipe_lib.config import resolve_path
from recipe_lib.train.run_folder import HISTORY, RunFolder


class Logger:
    """Per-step scalars to ``history.jsonl`` and TensorBoard (when the tensorboard package is present)."""

    def __init__(self, run: RunFolder, tensorboard_dir: str | None, start_step: int) -> None:
        self.run = run
        self.writer = None
        tb = resolve_path(tensorboard_dir) if tensorboard_dir else run.root / "tensorboard"
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover - tensorboard is a dependency
            return
        # purge_step drops events a killed run logged after the checkpoint this run resumes from.
        self.writer = SummaryWriter(str(tb), purge_step=start_step + 1 if start_step else None)
        self.tensorboard_dir = tb

    def log(self, step: int, scalars: dict[str, float], file: str = HISTORY, prefix: str = "train") -> None:
        row = {"step": step, **{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in scalars.items()}}
        self.run.append(file, row)
        if self.writer is not None:
            for key, value in scalars.items():
                if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                    self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start
