"""Packed vision attention and the fused (compiled) vision block.

Part of :mod:`recipe_lib.inference.accel` (see its docstring).

Packed attention: every chunk ``[cu[i], cu[i+1])`` of a vision block (a 112x112 window in the windowed blocks, a
frame in the full-attention blocks) is laid out as one row of a ``(chunks, longest, heads, head_dim)`` batch, shorter
chunks padded with a row of their own and their padded keys masked out; the whole block then makes ONE attention call
(no mask at all when every chunk has the same length, the common case of the full-attention blocks). Each query still
attends only to the keys of its own chunk, so the function is the stock one; padded query rows are computed and
dropped. Applies to Qwen2.5-VL's and Qwen3-VL's vision attention (same signature).

Fused block: a Qwen2.5-VL vision block (RMS norm, qkv, rotary, packed attention, projection, RMS norm, gated MLP with
its hidden size padded to a multiple of 128, both residuals) as one pure function of tensors, optionally compiled with
``torch.compile`` (static shapes: one graph per chunk layout and batch shape, up to ``RECOMPILE_LIMIT`` of them), so
norms, rotary, activation and residual adds fuse into few kernels around the matrix products. The padded MLP weights
are built once per block and rebuilt when a weight changes (version counters), not on every call.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

from recipe_lib.errors import RecipeError
from recipe_lib.inference.accel.toggle import bind_forward, has_own_forward, toggled, unbind_forward
from recipe_lib.inference.accel.vision_attention import PlanCache, rotate_qk
from recipe_lib.inference.accel.vision_mlp import padded_gate_up_down

ATTENTION_CLASSES = ("Qwen2_5_VLVisionAttention", "Qwen3VLVisionAttention")
FUSED_BLOCK_CLASSES = ("Qwen2_5_VLVisionBlock",)
RECOMPILE_LIMIT = 64  # graphs the compiled block may keep (two per batch shape: windowed and full attention)


@dataclasses.dataclass
class PackedPlan:
    """How the rows of one ``cu_seqlens`` sit in the packed batch.

    ``gather``: (chunks * length,) source row of each packed slot (padding slots repeat their chunk's first row), or
    None when the rows already are the packed batch (every chunk of the same length, from row 0). ``scatter``: (rows,)
    packed slot of each row, or None likewise. ``mask``: (chunks, 1, 1, length) True for real keys, or None."""

    rows: int
    chunks: int
    length: int
    gather: Any = None
    scatter: Any = None
    mask: Any = None

    def layout(self) -> tuple[Any, ...]:
        """(chunks, length, gather, scatter, mask): what :func:`packed_attention` takes (plain values, so that a
        compiled function sees tensors and integers only)."""
        return (self.chunks, self.length, self.gather, self.scatter, self.mask)


def build_packed_plan(cu_seqlens: Any) -> PackedPlan:
    """The packed layout of the chunks ``[cu[i], cu[i+1])`` (empty chunks are dropped)."""
    import torch

    bounds = cu_seqlens.tolist()
    spans = [(a, b - a) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    rows = bounds[-1] - bounds[0]
    if not spans:
        return PackedPlan(rows, 0, 0)
    lengths = {n for _, n in spans}
    length = max(lengths)
    if len(lengths) == 1 and bounds[0] == 0:
        return PackedPlan(rows, len(spans), length)
    starts = torch.tensor([a for a, _ in spans], dtype=torch.long)
    sizes = torch.tensor([n for _, n in spans], dtype=torch.long)
    offsets = torch.arange(length)
    valid = offsets[None, :] < sizes[:, None]  # (chunks, length)
    gather = torch.where(valid, starts[:, None] + offsets, starts[:, None]).reshape(-1)
    slots = torch.arange(len(spans) * length).reshape(len(spans), length)
    scatter = torch.empty(rows, dtype=torch.long)
    scatter[(starts[:, None] + offsets)[valid] - bounds[0]] = slots[valid]
    device = cu_seqlens.device
    return PackedPlan(
        rows,
        len(spans),
        length,
        gather.to(device, non_blocking=True),
        scatter.to(device, non_blocking=True),
        valid[:, None, None, :].to(device, non_blocking=True),
    )


def packed_attention(q: Any, k: Any, v: Any, layout: tuple[Any, ...], scaling: float) -> Any:
    """Attention of each chunk with itself, all chunks in one call: ``q``, ``k``, ``v`` of shape (rows, heads,
    head_dim) -> (rows, heads * head_dim); ``layout`` is :meth:`PackedPlan.layout`."""
    import torch.nn.functional as F

    chunks, length, gather, scatter, mask = layout
    heads, head_dim = q.shape[1], q.shape[2]
    if gather is not None:
        q, k, v = (t.index_select(0, gather) for t in (q, k, v))
    q, k, v = (t.reshape(chunks, length, heads, head_dim).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling)
    out = out.transpose(1, 2).reshape(chunks * length, heads * head_dim)
    return out if scatter is None else out.index_select(0, scatter)


def _packed_attention_forward(
    self: Any,
    hidden_states: Any,
    cu_seqlens: Any,
    rotary_pos_emb: Any = None,
    position_embeddings: Any = None,
    **kwargs: Any,
) -> Any:
    if self.config._attn_implementation not in ("sdpa", "eager") or self.training:
        return type(self).forward(self, hidden_states, cu_seqlens, rotary_pos_emb, position_embeddings, **kwargs)
    rows = hidden_states.shape[0]
    qkv = self.qkv(hidden_states).view(rows, 3, self.num_heads, -1)
    q, k = rotate_qk(qkv[:, :2], *position_embeddings).unbind(1)
    out = packed_attention(q, k, qkv[:, 2], self._recipe_packed_plans.get(cu_seqlens).layout(), self.scaling)
    return self.proj(out)


def _modules(model: Any, classes: tuple[str, ...]) -> list[Any]:
    return [m for m in model.modules() if type(m).__name__ in classes]


def _bind_packed(
    model: Any,
    classes: tuple[str, ...],
    forward: Callable[..., Any],
    plans: str,
    missing: str,
    hint: str,
    **attributes: Any,
) -> int:
    """Make ``forward`` the forward of every module of ``classes`` in ``model`` (in place), each given one shared cache
    of packed plans as attribute ``plans`` and the other ``attributes``; returns how many. A model without such a
    module is refused (``missing``: what it has none of, ``hint``: what the patch applies to)."""
    modules = _modules(model, classes)
    if not modules:
        raise RecipeError(f"{type(model).__name__} has no {missing}", hint=hint)
    cache = PlanCache(build_packed_plan)
    for module in modules:
        setattr(module, plans, cache)
        for name, value in attributes.items():
            setattr(module, name, value)
    return bind_forward(modules, forward)


def enable_packed_vision_attention(model: Any) -> int:
    """Patch every Qwen2.5-VL / Qwen3-VL vision attention of ``model`` (in place); returns how many were patched."""
    return _bind_packed(
        model,
        ATTENTION_CLASSES,
        _packed_attention_forward,
        "_recipe_packed_plans",
        missing="Qwen2.5-VL or Qwen3-VL vision attention to patch",
        hint="packed vision attention applies to Qwen2.5-VL and Qwen3-VL critics",
    )


def disable_packed_vision_attention(model: Any) -> int:
    return unbind_forward(_modules(model, ATTENTION_CLASSES), "_recipe_packed_plans")


def packed_vision_attention_enabled(model: Any) -> bool:
    return any(has_own_forward(m) for m in _modules(model, ATTENTION_CLASSES))


def packed_vision_attention(model: Any, enabled: bool = True) -> contextlib.AbstractContextManager[Any]:
    """Run a block with the packed vision attention on (or off), then put the model back as it was."""
    return toggled(
        model,
        enabled,
        packed_vision_attention_enabled,
        enable_packed_vision_attention,
        disable_packed_vision_attention,
    )


# --------------------------------------------------------------------------------------------------------------------
# Fused vision block
# --------------------------------------------------------------------------------------------------------------------

_ACTIVATIONS = {"silu": "silu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "quick_gelu": "quick_gelu"}


def _act(x: Any, name: str) -> Any:
    import torch
    import torch.nn.functional as F

    if name == "silu":
        return F.silu(x)
    if name == "gelu":
        return F.gelu(x)
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    return x * torch.sigmoid(1.702 * x)


def _rms(x: Any, weight: Any, eps: float) -> Any:
    """Qwen2RMSNorm: normalised in float32 (one fused kernel where torch has one), cast back, scaled by the weight."""
    import torch.nn.functional as F

    return weight * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


def fused_block_math(
    x: Any,
    weights: tuple[Any, ...],
    cos: Any,
    sin: Any,
    layout: tuple[Any, ...],
    heads: int,
    scaling: float,
    eps: float,
    act: str,
) -> Any:
    """One Qwen2.5-VL vision block as a pure function (``weights`` from :func:`_block_weights`)."""
    import torch.nn.functional as F

    n1, qkv_w, qkv_b, proj_w, proj_b, n2, gate_w, gate_b, up_w, up_b, down_w, down_b = weights
    rows = x.shape[0]
    qkv = F.linear(_rms(x, n1, eps), qkv_w, qkv_b).view(rows, 3, heads, -1)
    q, k = rotate_qk(qkv[:, :2], cos, sin).unbind(1)
    x = x + F.linear(packed_attention(q, k, qkv[:, 2], layout, scaling), proj_w, proj_b)
    h = _rms(x, n2, eps)
    if up_w is None:  # gate and up stacked in one (padded) product
        gate, up = F.linear(h, gate_w, gate_b).chunk(2, dim=-1)
    else:
        gate, up = F.linear(h, gate_w, gate_b), F.linear(h, up_w, up_b)
    return x + F.linear(_act(gate, act) * up, down_w, down_b)


def _plain(t: Any) -> bool:
    import torch

    return type(t) is torch.Tensor or type(t) is torch.nn.Parameter


def _block_weights(block: Any, multiple: int = 128) -> tuple[Any, ...]:
    """The block's weights for :func:`fused_block_math`: the MLP's gate and up stacked and its hidden size padded with
    zeros to a multiple of ``multiple`` (cached, rebuilt when a weight changes); weights of another tensor type (float8
    from :mod:`recipe_lib.inference.accel.float8`) are used as they are."""
    attn, mlp = block.attn, block.mlp
    head = (block.norm1.weight, attn.qkv.weight, attn.qkv.bias, attn.proj.weight, attn.proj.bias, block.norm2.weight)
    gate, up, down = mlp.gate_proj, mlp.up_proj, mlp.down_proj
    if not all(_plain(w) for w in (gate.weight, up.weight, down.weight)):
        return head + (gate.weight, gate.bias, up.weight, up.bias, down.weight, down.bias)
    params = [p for p in (gate.weight, gate.bias, up.weight, up.bias, down.weight, down.bias) if p is not None]
    key = tuple((p.data_ptr(), p._version) for p in params)
    cached = block.__dict__.get("_recipe_fused_mlp")
    if cached is None or cached[0] != key:
        stacked, bias, down_w = padded_gate_up_down(gate, up, down, -(-gate.out_features // multiple) * multiple)
        cached = (key, (stacked, bias, None, None, down_w, down.bias))
        block.__dict__["_recipe_fused_mlp"] = cached
    return head + cached[1]


_COMPILED: dict[str, Callable[..., Any]] = {}


def _compiled_math(backend: str) -> Callable[..., Any]:
    import torch

    if backend not in _COMPILED:
        _COMPILED[backend] = torch.compile(fused_block_math, backend=backend, dynamic=False, fullgraph=True)
    return _COMPILED[backend]


def _fused_block_forward(
    self: Any,
    hidden_states: Any,
    cu_seqlens: Any,
    rotary_pos_emb: Any = None,
    position_embeddings: Any = None,
    **kwargs: Any,
) -> Any:
    attn = self.attn
    act = _ACTIVATIONS.get(getattr(attn.config, "hidden_act", ""))
    if attn.config._attn_implementation not in ("sdpa", "eager") or self.training or act is None:
        return type(self).forward(self, hidden_states, cu_seqlens, rotary_pos_emb, position_embeddings, **kwargs)
    layout = self._recipe_fused_plans.get(cu_seqlens).layout()
    cos, sin = position_embeddings
    eps = self.norm1.variance_epsilon
    args = (hidden_states, _block_weights(self), cos, sin, layout, attn.num_heads, attn.scaling, eps)
    backend = self._recipe_compile
    if backend is None:
        return fused_block_math(*args, act)
    import torch

    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # older torch
    with config.patch(**{name: max(RECOMPILE_LIMIT, getattr(config, name))}):
        return _compiled_math(backend)(*args, act)


def enable_fused_vision_blocks(model: Any, compile_backend: str | None = None) -> int:
    """Run every Qwen2.5-VL vision block of ``model`` as :func:`fused_block_math` (packed attention inside),
    compiled with ``torch.compile(backend=compile_backend)`` unless it is None; returns how many blocks."""
    return _bind_packed(
        model,
        FUSED_BLOCK_CLASSES,
        _fused_block_forward,
        "_recipe_fused_plans",
        missing="Qwen2.5-VL vision block to fuse",
        hint="the fused vision block applies to Qwen2.5-VL critics (Cosmos-Reason1, the demo critic)",
        _recipe_compile=compile_backend,
    )


def disable_fused_vision_blocks(model: Any) -> int:
    return unbind_forward(
        _modules(model, FUSED_BLOCK_CLASSES), "_recipe_fused_plans", "_recipe_compile", "_recipe_fused_mlp"
    )


def fused_vision_blocks_enabled(model: Any) -> bool:
    return any(has_own_forward(m) for m in _modules(model, FUSED_BLOCK_CLASSES))


def fused_vision_blocks(
    model: Any, enabled: bool = True, compile_backend: str | None = None
) -> contextlib.AbstractContextManager[Any]:
    """Run a block of code with the fused vision blocks on (or off), then put the model back as it was."""
    return toggled(
        model,
        enabled,
        fused_vision_blocks_enabled,
        lambda m: enable_fused_vision_blocks(m, compile_backend),
        disable_fused_vision_blocks,
    )
