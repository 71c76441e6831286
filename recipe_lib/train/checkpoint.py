"""Checkpoints that resume: seeding and RNG state, atomic checkpoint writing with rotation, and restoring a run.

Every checkpoint is written to a temporary folder and moved into place in one ``os.replace``, so a run killed at any
moment (SIGKILL included) leaves only complete checkpoints; the next run with the same settings resumes from the newest
one: weights, optimizer moments, scheduler, RNG states and the position in the data order are all restored, and log
lines past that step are dropped. Only the newest ``train.ckpt.max_keep`` step checkpoints are kept.

With LoRA the saved model is the base model with the adapters merged in (so it loads like any checkpoint), and
``adapter/`` holds the adapter weights that a resumed run continues from.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from recipe_lib.errors import RecipeError
from recipe_lib.io import atomic_write_json
from recipe_lib.train.model import ADAPTER_DIR, TrainModel, merged_state_dict
from recipe_lib.train.run_folder import STATE_FILE, STATE_JSON, RunFolder


def seed_everything(seed: int | None) -> None:
    import numpy as np
    import torch

    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run: RunFolder,
    tm: TrainModel,
    name: str,
    state: dict[str, Any],
    info: dict[str, Any],
    max_keep: int | None = None,
) -> Path:
    """Save model + processor + trainer state as ``checkpoints/<name>`` atomically; rotate old step checkpoints."""
    import torch

    run.checkpoints.mkdir(parents=True, exist_ok=True)
    target = run.checkpoints / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.saving-", dir=run.checkpoints))
    try:
        staging.chmod(0o755)
        if tm.lora:
            tm.base().save_pretrained(staging, state_dict=merged_state_dict(tm.model), safe_serialization=True)
            tm.model.save_pretrained(staging / ADAPTER_DIR)
        else:
            tm.model.save_pretrained(staging, safe_serialization=True)
        tm.processor.save_pretrained(staging)
        torch.save(state, staging / STATE_FILE)
        atomic_write_json(staging / STATE_JSON, info)  # written last: its presence marks a complete checkpoint
        if target.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=run.checkpoints))
            os.replace(target, trash / "old")
            os.replace(staging, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    if max_keep is not None and max_keep > 0:
        steps = run.step_checkpoints()
        for _, old in steps[: max(0, len(steps) - max_keep)]:
            shutil.rmtree(old, ignore_errors=True)
    for leftover in run.checkpoints.glob(".*.saving-*"):  # from runs killed mid-save
        shutil.rmtree(leftover, ignore_errors=True)
    return target


def load_trainer_state(path: Path) -> dict[str, Any]:
    """The optimizer, scheduler, RNG and step state saved with checkpoint ``path``."""
    import torch

    try:
        return torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as exc:
        raise RecipeError(
            f"cannot read the trainer state of checkpoint {path} ({exc.__class__.__name__})",
            hint="remove that checkpoint folder to resume from the one before it, or restart the run",
        ) from exc


def restore_trainer_state(resume_from: Path | None, optimizer: Any, scheduler: Any, run: RunFolder) -> int:
    """Load optimizer, scheduler and RNG state from the checkpoint ``resume_from`` (if any), cut the run's logs back
    to its step, and return that step (0 for a fresh run)."""
    if resume_from is None:
        return 0
    state = load_trainer_state(resume_from)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    start = int(state["step"])
    run.truncate_logs(start)
    return start
