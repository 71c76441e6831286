"""Will it fit: the disk a checkpoint needs, and the GPU memory a training mode needs, estimated from the model.

Both estimates come from parameter counts and dtypes, before the first step, so a run that cannot finish is refused
with one line naming the numbers instead of failing hours later:

* **disk** (:func:`check_disk`): one checkpoint is the weights that train (the LoRA adapter only, or every weight)
  plus AdamW's two moments of every trainable weight, plus the processor files (a fixed allowance); with
  ``local.lora.merge_final`` the merged model comes on top. A save that still runs out of disk is reported by
  :func:`disk_error` (the checkpoint writer keeps the last complete checkpoint).
* **GPU memory** (:func:`check_memory`): the weights, one gradient and two AdamW moments per trainable weight, the
  copy of the second moments torch's multi-tensor AdamW makes in its step, and GRPO's frozen reference copy
  (full-parameter training with ``kl_beta > 0``). Activations are not counted: they grow with the clips' visual tokens
  and the batch, so a mode that passes this check can still run out of memory at its first step;
  :func:`out_of_memory_error` turns that into the same kind of message.
"""

from __future__ import annotations

import dataclasses
import errno
import re
import shutil
from pathlib import Path
from typing import Any

from recipe_lib.errors import RecipeError

PROCESSOR_ALLOWANCE = 64 << 20  # tokenizer and processor files, trainer_state.json, RNG states (Qwen2.5-VL: ~12 MB)
ADAM_MOMENTS = 2  # AdamW keeps exp_avg and exp_avg_sq, each the size of its weight
LORA_BYTES = 4  # peft keeps adapter weights in float32 (autocast_adapter_dtype)

_DISK_ERRNOS = {errno.ENOSPC: "ENOSPC", errno.EDQUOT: "EDQUOT", errno.EFBIG: "EFBIG"}
# safetensors reports the OS error in its message only ("... No space left on device (os error 28)").
_DISK_TEXT = (
    (re.compile(r"os error 28\b|no space left on device", re.I), "ENOSPC"),
    (re.compile(r"os error 122\b|disk quota exceeded", re.I), "EDQUOT"),
    (re.compile(r"os error 27\b|file too large", re.I), "EFBIG"),
)


def human_bytes(n: float) -> str:
    """``1.23 GB (1 234 567 890 bytes)``-style text: decimal units, then the exact count."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit} ({int(n):,} bytes)".replace(",", " ")
    return f"{int(n)} bytes"


@dataclasses.dataclass(frozen=True)
class Footprint:
    """Parameter counts and bytes of a model being trained (``trainable``: the weights the optimizer updates)."""

    params: int
    param_bytes: int
    trainable: int
    trainable_bytes: int

    @property
    def frozen_bytes(self) -> int:
        return self.param_bytes - self.trainable_bytes


def footprint(model: Any) -> Footprint:
    """Counts and bytes of ``model``'s parameters (each shared tensor counted once)."""
    seen: set[int] = set()
    params = param_bytes = trainable = trainable_bytes = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        size = p.numel() * p.element_size()
        params += p.numel()
        param_bytes += size
        if p.requires_grad:
            trainable += p.numel()
            trainable_bytes += size
    return Footprint(params, param_bytes, trainable, trainable_bytes)


def checkpoint_parts(fp: Footprint, lora: bool) -> dict[str, int]:
    """Bytes of one checkpoint by part: the weights saved, AdamW's moments, the processor allowance."""
    return {
        "adapter" if lora else "weights": fp.trainable_bytes if lora else fp.param_bytes,
        "optimizer state": ADAM_MOMENTS * fp.trainable_bytes,
        "processor files": PROCESSOR_ALLOWANCE,
    }


def _existing(folder: Path) -> Path:
    folder = Path(folder).resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def free_bytes(folder: Path) -> int:
    """Free bytes on the disk of ``folder`` (or of its nearest existing parent)."""
    return shutil.disk_usage(_existing(folder)).free


def check_disk(folder: Path, parts: dict[str, int], what: str, hint: str) -> None:
    """Refuse (one RecipeError) when the disk of ``folder`` has less free space than the sum of ``parts``."""
    need = sum(parts.values())
    free = free_bytes(folder)
    if free >= need:
        return
    detail = " + ".join(f"{name} {human_bytes(size)}" for name, size in parts.items() if size)
    raise RecipeError(
        f"not enough free disk space for {what} in {folder}: {human_bytes(free)} free, {human_bytes(need)} needed "
        f"({detail})",
        hint=hint,
    )


def disk_error(exc: BaseException) -> str | None:
    """``ENOSPC`` / ``EDQUOT`` / ``EFBIG`` when ``exc`` (or an exception it came from) is the disk refusing a write."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_ERRNOS:
            return _DISK_ERRNOS[current.errno]
        text = str(current)
        for pattern, name in _DISK_TEXT:
            if pattern.search(text):
                return name
        current = current.__cause__ or current.__context__
    return None


def disk_full_error(kind: str, what: str, folder: Path, need: int, kept: str) -> RecipeError:
    """The one-line error for a save the disk refused (``kind`` from :func:`disk_error`)."""
    free = human_bytes(free_bytes(folder))
    if kind == "EFBIG":
        message = f"the file size limit was reached while saving {what} in {folder} (about {human_bytes(need)})"
        fix = "raise the file size limit (ulimit -f)"
    else:
        cause = "disk quota exceeded" if kind == "EDQUOT" else "no space left on the device"
        message = f"{cause} while saving {what} in {folder}: {free} free, about {human_bytes(need)} needed"
        fix = "free some disk space or point train.output_dir at a bigger disk"
    return RecipeError(message, hint=f"{kept}; {fix}, then rerun the same command to resume")


# ---------------------------------------------------------------------------------------------------------------------
# GPU memory


def lora_parameter_count(model: Any, target_modules: list[str], r: int) -> int:
    """Parameters LoRA of rank ``r`` would add to ``model``'s linear layers named ``target_modules``."""
    import torch

    targets = set(target_modules)
    total = 0
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in targets and isinstance(module, torch.nn.Linear):
            total += r * (module.in_features + module.out_features)
    return total


def memory_parts(fp: Footprint, reference: bool) -> dict[str, int]:
    """GPU bytes of a mode before activations: weights, gradients, AdamW moments and step copy, GRPO's reference."""
    return {
        "weights": fp.param_bytes,
        "gradients": fp.trainable_bytes,
        "AdamW moments": ADAM_MOMENTS * fp.trainable_bytes,
        "AdamW step copy": fp.trainable_bytes,  # multi-tensor AdamW takes the root of all second moments at once
        "reference model": fp.param_bytes if reference else 0,
    }


def check_memory(
    fp: Footprint, budget: int, device: str, mode: str, reference: bool, lora_alternative: int | None
) -> dict[str, int]:
    """Refuse (one RecipeError naming what would fit) when the mode's memory before activations exceeds ``budget``
    bytes; returns the parts. ``lora_alternative``: LoRA parameters the model would get (None: LoRA is on already)."""
    parts = memory_parts(fp, reference)
    need = sum(parts.values())
    if need <= budget:
        return parts
    detail = " + ".join(f"{name} {human_bytes(size)}" for name, size in parts.items() if size)
    options = []
    if lora_alternative is not None:
        lora_fp = Footprint(
            fp.params + lora_alternative,
            fp.param_bytes + LORA_BYTES * lora_alternative,
            lora_alternative,
            LORA_BYTES * lora_alternative,
        )
        lora_need = sum(memory_parts(lora_fp, reference=False).values())
        fits = "fits" if lora_need <= budget else "does not fit either"
        options.append(f"local.lora.enable=true ({human_bytes(lora_need)} before activations: {fits})")
    weight_bytes = fp.param_bytes / max(fp.params, 1)
    if weight_bytes >= 4:
        options.append("local.dtype=bfloat16 (half the bytes of every weight, gradient and moment)")
    options.append("then policy.model_gradient_checkpointing=true and fewer visual tokens for the activations")
    raise RecipeError(
        f"{mode} needs about {human_bytes(need)} of GPU memory before activations ({detail}), more than the "
        f"{human_bytes(budget)} of {device}",
        hint="; ".join(options),
    )


def out_of_memory_error(cfg: Any, step: int, kind: str, device: str, peak: int, total: int) -> RecipeError:
    """The one-line error for CUDA running out of memory during a step, naming the settings that need less."""
    options = []
    if not cfg.local.lora.enable:
        options.append("local.lora.enable=true (trains adapters only: no gradients or AdamW moments for the model)")
    if not cfg.policy.model_gradient_checkpointing:
        options.append("policy.model_gradient_checkpointing=true (recomputes activations in the backward pass)")
    mini = cfg.train.train_policy.mini_batch
    if mini > 1:
        options.append(f"train.train_policy.mini_batch={max(1, mini // 2)} (fewer clips per forward pass)")
    options.append(
        "fewer visual tokens per clip (custom.vision.max_pixels, custom.vision.total_pixels, custom.vision.fps)"
    )
    if kind == "grpo":
        options.append("a smaller rollout.max_response_length or rollout.n_generation")
    return RecipeError(
        f"{device} ran out of memory at step {step} of this {kind.upper()} run (peak {human_bytes(peak)} of "
        f"{human_bytes(total)})",
        hint="settings that need less memory: " + "; ".join(options),
    )


def mode_estimates(model: str, dtype: str, lora: Any, reference: bool = False) -> dict[str, Any]:
    """GPU bytes before activations of full-parameter and LoRA training of the model folder ``model``, from its
    ``config.json`` alone (the model is built on the meta device: nothing is allocated, no weights are read).
    ``lora``: the ``[local.lora]`` settings; ``reference``: GRPO's frozen copy under full-parameter training."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText
    from transformers.modeling_utils import no_init_weights

    config = AutoConfig.from_pretrained(model, local_files_only=True)
    with torch.device("meta"), no_init_weights():
        net = AutoModelForImageTextToText.from_config(config).to(getattr(torch, dtype))
    full = footprint(net)
    n_lora = lora_parameter_count(net, list(lora.target_modules), lora.r)
    adapted = Footprint(full.params + n_lora, full.param_bytes + LORA_BYTES * n_lora, n_lora, LORA_BYTES * n_lora)
    out: dict[str, Any] = {"params": full.params, "dtype": dtype, "lora_params": n_lora}
    for mode, fp, ref in (("full", full, reference), ("lora", adapted, False)):
        parts = memory_parts(fp, ref)
        out[mode] = {"bytes": sum(parts.values()), "parts": parts}
    out["weights_bytes"] = full.param_bytes
    return out
