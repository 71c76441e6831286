"""Batched vision attention: one attention call per group of equal-length chunks instead of one per chunk.

Part of :mod:`recipe_lib.inference.accel` (see its docstring).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

from recipe_lib.errors import RecipeError
from recipe_lib.inference.accel.toggle import bind_forward, has_own_forward, toggled, unbind_forward

# --------------------------------------------------------------------------------------------------------------------
# Batched vision attention
# --------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _ChunkPlan:
    """How to run the chunks of one ``cu_seqlens``: (length, count, row indices or None when one group covers all)."""

    total: int
    groups: list[tuple[int, int, Any]]


class PlanCache:
    """Plans keyed by the identity of the ``cu_seqlens`` tensor the vision tower passes to every block; ``build``
    makes a plan from such a tensor (the grouped plan here, the packed one in ``packed_vision``).

    The tower builds two such tensors per forward (windows and frames) and hands the same objects to all 32 blocks,
    so a plan is built (one device sync) twice per forward instead of once per block. Entries hold a reference to
    their tensor, so an identity match can never be a different tensor at a reused address.
    """

    def __init__(self, build: Callable[[Any], Any], size: int = 4) -> None:
        self.build = build
        self.entries: collections.deque[tuple[Any, Any]] = collections.deque(maxlen=size)

    def get(self, cu_seqlens: Any) -> Any:
        for tensor, plan in self.entries:
            if tensor is cu_seqlens:
                return plan
        plan = self.build(cu_seqlens)
        self.entries.append((cu_seqlens, plan))
        return plan


def build_chunk_plan(cu_seqlens: Any) -> _ChunkPlan:
    """Group the chunks ``[cu[i], cu[i+1])`` by length; empty chunks are skipped."""
    import torch

    bounds = cu_seqlens.tolist()
    by_length: dict[int, list[int]] = {}
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end > start:
            by_length.setdefault(end - start, []).append(start)
    total = bounds[-1] - bounds[0]
    if len(by_length) == 1 and bounds[0] == 0:
        (length, starts) = next(iter(by_length.items()))
        return _ChunkPlan(total, [(length, len(starts), None)])
    groups = []
    for length, starts in sorted(by_length.items(), key=lambda kv: -len(kv[1]) * kv[0]):
        rows = (torch.tensor(starts, dtype=torch.long)[:, None] + torch.arange(length)).reshape(-1)
        groups.append((length, len(starts), rows.to(cu_seqlens.device, non_blocking=True)))
    return _ChunkPlan(total, groups)


def _vision_modules() -> Any:
    try:
        from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as qmod
    except ImportError as exc:  # pragma: no cover - transformers is a hard dependency
        raise RecipeError("transformers has no Qwen2.5-VL model", hint="install transformers>=4.57") from exc
    return qmod


def _grouped_forward(
    self: Any,
    hidden_states: Any,
    cu_seqlens: Any,
    rotary_pos_emb: Any = None,
    position_embeddings: Any = None,
    **kwargs: Any,
) -> Any:
    qmod = _vision_modules()
    impl = self.config._attn_implementation
    if impl not in ("sdpa", "eager"):  # flash attention already runs all chunks in one varlen call
        return type(self).forward(self, hidden_states, cu_seqlens, rotary_pos_emb, position_embeddings, **kwargs)
    seq_length = hidden_states.shape[0]
    heads = self.num_heads
    qkv = self.qkv(hidden_states).view(seq_length, 3, heads, -1)
    q, k = rotate_qk(qkv[:, :2], *position_embeddings).unbind(1)
    v = qkv[:, 2]
    head_dim = q.shape[-1]
    attend = qmod.eager_attention_forward if impl == "eager" else qmod.ALL_ATTENTION_FUNCTIONS[impl]
    plan = self._recipe_plans.get(cu_seqlens)
    out = None
    for length, count, rows in plan.groups:
        if rows is None:
            parts = [t.reshape(count, length, heads, head_dim).transpose(1, 2) for t in (q, k, v)]
        else:
            parts = [t.index_select(0, rows).view(count, length, heads, head_dim).transpose(1, 2) for t in (q, k, v)]
        group_out = attend(
            self,
            *parts,
            attention_mask=None,
            scaling=self.scaling,
            dropout=0.0 if not self.training else self.attention_dropout,
            is_causal=False,
            **kwargs,
        )[0]  # (count, length, heads, head_dim)
        if rows is None:
            out = group_out.reshape(seq_length, heads * head_dim)
        else:
            if out is None:
                out = group_out.new_empty(seq_length, heads, head_dim)
            out.index_copy_(0, rows, group_out.reshape(count * length, heads, head_dim))
    if out is None:  # no patches at all
        out = q.new_zeros(seq_length, heads * head_dim)
    return self.proj(out.reshape(seq_length, -1))


def rotate_qk(qk: Any, cos: Any, sin: Any) -> Any:
    """Rotary embedding of queries and keys together, ``qk`` of shape (seq, 2, heads, head_dim), in float32 like
    transformers' ``apply_rotary_pos_emb_vision`` (x cos + rotate_half(x) sin) but in four passes instead of about
    fifteen: rotate_half(x) sin equals roll(x, d/2) times sin with its first half negated."""
    import torch

    half = qk.shape[-1] // 2
    x = qk.float()
    cos = cos.float()[:, None, None, :]
    signed = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1).float()[:, None, None, :]
    return torch.addcmul(x * cos, x.roll(half, dims=-1), signed).to(qk.dtype)


def _vision_attention_modules(model: Any, required: bool = True) -> list[Any]:
    qmod = _vision_modules()
    found = [m for m in model.modules() if isinstance(m, qmod.Qwen2_5_VLVisionAttention)]
    if not found and not required:
        return found
    if not found:
        raise RecipeError(
            f"{type(model).__name__} has no Qwen2.5-VL vision attention to patch",
            hint="batched vision attention applies to Qwen2.5-VL models (Cosmos-Reason1, the demo critic)",
        )
    params = inspect.signature(qmod.Qwen2_5_VLVisionAttention.forward).parameters
    if not {"hidden_states", "cu_seqlens", "position_embeddings"} <= set(params):
        import transformers

        raise RecipeError(
            f"transformers {transformers.__version__} changed Qwen2.5-VL's vision attention; the batched patch "
            "does not know this version",
            hint="use transformers 4.57 (the pinned version) or turn batched_vision_attention off",
        )
    return found


def enable_batched_vision_attention(model: Any) -> int:
    """Patch every vision attention block of ``model`` (in place); returns how many were patched."""
    modules = _vision_attention_modules(model)
    plans = PlanCache(build_chunk_plan)
    for module in modules:
        module._recipe_plans = plans
    return bind_forward(modules, _grouped_forward)


def disable_batched_vision_attention(model: Any) -> int:
    """Undo :func:`enable_batched_vision_attention`; returns how many blocks were restored."""
    return unbind_forward(_vision_attention_modules(model), "_recipe_plans")


def batched_vision_attention_enabled(model: Any) -> bool:
    return any(has_own_forward(m) for m in _vision_attention_modules(model, required=False))


def batched_vision_attention(model: Any, enabled: bool = True) -> contextlib.AbstractContextManager[Any]:
    """Run a block with the batched vision attention on (or off), then put the model back as it was.

    A model without Qwen2.5-VL vision attention is left alone when ``enabled`` is False and refused when True.
    """
    return toggled(
        model,
        enabled,
        batched_vision_attention_enabled,
        enable_batched_vision_attention,
        disable_batched_vision_attention,
    )
