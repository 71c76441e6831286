"""Checkpoints that resume: seeding and RNG state, atomic checkpoint writing with rotation, and restoring a run.

Every checkpoint is written to a temporary folder and moved into place in one ``os.replace``, so a run killed at any
moment (SIGKILL included) leaves only complete checkpoints; the next run with the same settings resumes from the newest
one: weights, optimizer moments, scheduler, RNG states and the position in the data order are all restored, and log
lines past that step are dropped. Only the newest ``train.ckpt.max_keep`` step checkpoints are kept. A save the disk
refuses (full, quota, file size limit) removes its partial folder and stops the run with one error; the checkpoints
already written stay as they were.

With LoRA a checkpoint holds the adapter in PEFT's format (``adapter_config.json`` + ``adapter_model.safetensors``,
megabytes; ``PeftModel.from_pretrained(base, folder)`` loads it, and so does
:func:`recipe_lib.models.loading.load_critic`, onto the base model the adapter config names). The merged model is
written once, on request: ``local.lora.merge_final`` writes ``<output_dir>/merged`` at the end of the run, and
``plausibility merge CHECKPOINT --out DIR`` (:func:`merge_checkpoint`) merges any adapter checkpoint into a full folder.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recipe_lib.errors import RecipeError
from recipe_lib.io import atomic_write_json
from recipe_lib.models.loading import adapter_base, is_adapter_folder, load_critic
from recipe_lib.train.capacity import check_disk, checkpoint_parts, disk_error, disk_full_error, footprint
from recipe_lib.train.model import TrainModel
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


def write_folder(target: Path, write: Callable[[Path], None], what: str, need: int, kept: str) -> Path:
    """Write a folder atomically: ``write(staging)`` fills a temporary folder beside ``target``, which then replaces
    ``target`` in one rename (an older ``target`` is removed only after). A write the disk refuses removes the
    partial folder and raises one RecipeError (``what``, about ``need`` bytes, ``kept``: what is left intact)."""
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.saving-", dir=parent))
    try:
        staging.chmod(0o755)
        try:
            write(staging)
        except Exception as exc:  # safetensors raises its own SafetensorError, torch.save a RuntimeError
            kind = disk_error(exc)
            if kind is None:
                raise
            shutil.rmtree(staging, ignore_errors=True)
            raise disk_full_error(kind, what, parent, need, kept) from None
        if target.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent))
            os.replace(target, trash / "old")
            os.replace(staging, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    for leftover in parent.glob(".*.saving-*"):  # from runs killed mid-save
        shutil.rmtree(leftover, ignore_errors=True)
    return target


def save_checkpoint(
    run: RunFolder,
    tm: TrainModel,
    name: str,
    state: dict[str, Any],
    info: dict[str, Any],
    max_keep: int | None = None,
) -> Path:
    """Save the weights (the adapter under LoRA) + processor + trainer state as ``checkpoints/<name>`` atomically;
    rotate old step checkpoints."""
    import torch

    def write(staging: Path) -> None:
        tm.model.save_pretrained(staging, safe_serialization=True)  # under LoRA: peft writes the adapter only
        tm.processor.save_pretrained(staging)
        with (staging / STATE_FILE).open("wb") as fh:  # through a Python file: a full disk keeps its errno
            torch.save(state, fh)
        atomic_write_json(staging / STATE_JSON, info)  # written last: its presence marks a complete checkpoint

    steps = run.step_checkpoints()
    kept = f"the last complete checkpoint ({steps[-1][1].name}) is kept" if steps else "no checkpoint was kept"
    need = sum(checkpoint_parts(footprint(tm.model), tm.lora).values())
    target = write_folder(run.checkpoints / name, write, f"checkpoint {name}", need, kept)
    if max_keep is not None and max_keep > 0:
        steps = run.step_checkpoints()
        for _, old in steps[: max(0, len(steps) - max_keep)]:
            shutil.rmtree(old, ignore_errors=True)
    return target


def save_merged(tm: TrainModel, target: Path, kept: str) -> Path:
    """Merge the LoRA adapters into the model being trained and save it, with its processor, as a full model folder
    (the model is left merged: call this after the last checkpoint)."""
    merged = tm.model.merge_and_unload()
    need = footprint(merged).param_bytes

    def write(staging: Path) -> None:
        merged.save_pretrained(staging, safe_serialization=True)
        tm.processor.save_pretrained(staging)

    return write_folder(target, write, "the merged model", need, kept)


def merge_checkpoint(checkpoint: Path, out: Path, device: str = "auto", dtype: str | None = None) -> Path:
    """Merge the LoRA adapter checkpoint ``checkpoint`` into its base model and save the result as a full model
    folder ``out`` (loadable by any Qwen2.5-VL reader, vLLM included). ``dtype`` None: the base model's own."""
    checkpoint, out = Path(checkpoint), Path(out)
    if not is_adapter_folder(checkpoint):
        what = "a full model folder already" if (checkpoint / "config.json").is_file() else "not a LoRA checkpoint"
        raise RecipeError(
            f"{checkpoint} is {what}: nothing to merge",
            hint="pass a checkpoint folder that holds adapter_config.json (a LoRA run's checkpoints/step_N or final)",
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RecipeError(f"{out} already exists and is not empty", hint="choose a new --out folder")
    if dtype is None:
        dtype = _saved_dtype(str(checkpoint))
    critic = load_critic(checkpoint, device=device, dtype=dtype)
    need = footprint(critic.model).param_bytes
    check_disk(out.parent, {"merged model": need}, "the merged model", "choose an --out folder on a bigger disk")

    def write(staging: Path) -> None:
        critic.model.save_pretrained(staging, safe_serialization=True)
        critic.processor.save_pretrained(staging)

    return write_folder(out, write, "the merged model", need, f"the adapter checkpoint {checkpoint} is unchanged")


def _saved_dtype(model: str) -> str:
    """The dtype a model's weights are stored in (its config.json; an adapter's base model's), else ``auto``."""
    for _ in range(8):  # an adapter's base may be an adapter checkpoint too
        if not is_adapter_folder(model):
            break
        model = adapter_base(model)
    try:
        config = json.loads((Path(model) / "config.json").read_text())
    except (OSError, ValueError):
        return "auto"
    value = config.get("dtype") or config.get("torch_dtype")
    return value if value in ("float32", "bfloat16", "float16") else "auto"


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
