"""AdamW with cosmos-rl's warm-up / stable / decay learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any

from recipe_lib.errors import ConfigError


def build_optimizer(params: list[Any], train: Any) -> Any:
    import torch

    if train.optm_name.lower() != "adamw":
        raise ConfigError(f"train.optm_name '{train.optm_name}' is not supported here", hint="use AdamW")
    return torch.optim.AdamW(
        params, lr=train.optm_lr, betas=tuple(train.optm_betas), weight_decay=train.optm_weight_decay
    )


def lr_factor(step: int, total_steps: int, train: Any) -> float:
    """cosmos-rl's warm-up / stable / decay schedule: the multiplier of ``optm_lr`` at optimizer step ``step``.

    Linear warm-up over ``optm_warmup_steps`` (a fraction of the run when a float <= 1), then constant, then an
    optional decay (``optm_decay_type`` linear | sqrt | cosine over ``optm_decay_ratio`` of the run, down to
    ``optm_min_lr_factor``); without a decay type the rate stays constant after the warm-up, cosmos-rl's default.
    """
    warm = train.optm_warmup_steps
    warm = int(warm * total_steps) if isinstance(warm, float) and warm <= 1.0 else int(warm)
    warm = min(warm, total_steps)
    decay_type = train.optm_decay_type
    decay_ratio = train.optm_decay_ratio
    min_factor = float(train.optm_min_lr_factor)
    start = float(train.optm_warmup_start_factor)
    decay = round(total_steps * decay_ratio) if decay_ratio is not None else total_steps - warm
    decay = min(decay, total_steps - warm) if decay_type not in (None, "none") else 0
    stable_end = total_steps - decay
    if step < warm:
        return 1.0 if warm == 1 else start + (1.0 - start) * step / (warm - 1)
    if step < stable_end or decay == 0:
        return 1.0
    progress = min(1.0, (step - stable_end) / decay)
    if decay_type == "linear":
        value = 1.0 - progress
    elif decay_type == "sqrt":
        value = 1.0 - math.sqrt(progress)
    elif decay_type == "cosine":
        value = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ConfigError(f"unknown optm_decay_type '{decay_type}'", hint="use linear, sqrt, cosine or none")
    return min_factor + (1.0 - min_factor) * value


def build_scheduler(optimizer: Any, total_steps: int, train: Any) -> Any:
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, train))
