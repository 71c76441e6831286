"""Qwen2.5-VL's 3-D rotary positions with the time axis as the model defines it.

A video block of ``t x h x w`` merged patches gets positions ``(time, row, column)``. The time index of temporal grid
``k`` is ``floor(k * second_per_grid * tokens_per_second)``: with the processor's ``second_per_grid = 2 / fps``, a clip
sampled at 4 fps and ``tokens_per_second = 2`` advances one position per grid, at 16 fps (the recipe's setting) one
position every four grids. transformers 4.57's ``get_rope_index`` casts ``second_per_grid`` to an integer *before* the
product, so any fps above 2 (``second_per_grid < 1``) puts every frame of a clip at time 0 — the frames' order is lost,
and scores differ from vLLM's, which keeps the fraction (measured on identical weights: max |Δp(1..5)| 0.036 for the
demo critic and 0.38 for the 7B shape at fps 4, both in float32; see ``benchmarks/README.md``).

:func:`install` replaces the model's ``get_rope_index`` with :func:`rope_index`, which keeps the fraction; text-only
inputs and ``second_per_grid >= 1`` with whole values give exactly transformers' positions. The loader installs it on
every Qwen2.5-VL critic (scoring and in-process training alike), so training, scoring and vLLM see one time axis.
"""

from __future__ import annotations

import types
from typing import Any

import torch

from recipe_lib.errors import RecipeError

PATCHED = "_recipe_rope_index"


def _text(length: int, start: int) -> torch.Tensor:
    return torch.arange(length).view(1, -1).expand(3, -1) + start


def _block(t: int, h: int, w: int, seconds_per_grid: float, tokens_per_second: float, start: int) -> torch.Tensor:
    time = torch.floor(torch.arange(t, dtype=torch.float64) * (seconds_per_grid * tokens_per_second)).long()
    grid = torch.stack(
        [
            time.view(-1, 1, 1).expand(t, h, w),
            torch.arange(h).view(1, -1, 1).expand(t, h, w),
            torch.arange(w).view(1, 1, -1).expand(t, h, w),
        ]
    )
    return grid.reshape(3, -1) + start


def _runs(ids: torch.Tensor, tokens: tuple[int, int]) -> list[tuple[int, int, int]]:
    """``(start, length, token)`` of each maximal run of image or video placeholder tokens."""
    marks = (ids == tokens[0]) | (ids == tokens[1])
    if not bool(marks.any()):
        return []
    padded = torch.cat([torch.tensor([False]), marks, torch.tensor([False])]).int()
    edges = padded.diff()
    starts = torch.nonzero(edges == 1).flatten().tolist()
    ends = torch.nonzero(edges == -1).flatten().tolist()
    return [(s, e - s, int(ids[s])) for s, e in zip(starts, ends)]


def rope_index(
    self: Any,
    input_ids: torch.Tensor | None = None,
    image_grid_thw: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    second_per_grid_ts: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop-in for ``Qwen2_5_VLModel.get_rope_index`` (same arguments and results) that keeps fractional seconds per
    grid. ``self`` is the model part that owns ``config`` (``model.model``)."""
    if input_ids is None or (image_grid_thw is None and video_grid_thw is None):
        return getattr(self, PATCHED)(input_ids, image_grid_thw, video_grid_thw, second_per_grid_ts, attention_mask)
    config = self.config
    merge = int(config.vision_config.spatial_merge_size)
    tokens_per_second = float(config.vision_config.tokens_per_second)
    image_id, video_id = int(config.image_token_id), int(config.video_token_id)
    images = iter(image_grid_thw.tolist() if image_grid_thw is not None else [])
    videos = iter(video_grid_thw.tolist() if video_grid_thw is not None else [])
    seconds = iter(second_per_grid_ts.tolist() if second_per_grid_ts is not None else [])
    cpu_ids = input_ids.detach().cpu()
    mask = attention_mask.detach().cpu() == 1 if attention_mask is not None else torch.ones_like(cpu_ids, dtype=bool)
    positions = torch.ones(3, *cpu_ids.shape, dtype=cpu_ids.dtype)
    deltas = []
    for row in range(cpu_ids.shape[0]):
        ids = cpu_ids[row][mask[row]]
        parts, at, nxt = [], 0, 0
        for start, length, token in _runs(ids, (image_id, video_id)):
            if start > at:
                parts.append(_text(start - at, nxt))
                nxt += start - at
            try:
                t, h, w = next(images) if token == image_id else next(videos)
                per_grid = 0.0 if token == image_id else next(seconds, 1.0)
            except StopIteration as exc:
                raise RecipeError("more image/video placeholder blocks in the prompt than grids given") from exc
            h, w = h // merge, w // merge
            if length != t * h * w:
                raise RecipeError(f"a placeholder block of {length} tokens does not match its grid {t}x{h}x{w}")
            block = _block(t, h, w, per_grid, tokens_per_second, nxt)
            parts.append(block)
            nxt = int(block.max()) + 1
            at = start + length
        if at < len(ids):
            parts.append(_text(len(ids) - at, nxt))
        placed = torch.cat(parts, dim=1)
        positions[:, row, mask[row]] = placed
        deltas.append(int(placed.max()) + 1 - cpu_ids.shape[1])
    device = input_ids.device
    return positions.to(device), torch.tensor(deltas, device=device).unsqueeze(1)


def install(model: Any) -> bool:
    """Give a Qwen2.5-VL model (``...ForConditionalGeneration``) :func:`rope_index`; False for other models."""
    inner = getattr(model, "model", None)
    config = getattr(model, "config", None)
    if inner is None or getattr(config, "model_type", None) != "qwen2_5_vl" or not hasattr(inner, "get_rope_index"):
        return False
    if not hasattr(inner, PATCHED):
        setattr(inner, PATCHED, inner.get_rope_index)
        inner.get_rope_index = types.MethodType(rope_index, inner)
    return True
