"""cosmos-rl's attention calls on torch's scaled-dot-product attention, for machines without flash-attn.

cosmos-rl's own Qwen2.5-VL / Qwen3-VL policies call three flash-attn functions through the ``FlashAttnMeta`` singleton
(``cosmos_rl.policy.kernel.modeling_utils``): ``flash_attn_func`` (decoder, causal), ``flash_attn_varlen_func``
(decoder on packed sequences and the vision tower's windows, segments given by ``cu_seqlens``) and
``apply_rotary_emb`` (the vision tower's rotary embedding). flash-attn ships no wheel for the CUDA machines' torch
2.11 / CUDA 13, and building it needs nvcc and an hour, so without it cosmos-rl's first training step stops with
"FlashAttention is not installed". :func:`install` puts the functions below into that singleton before cosmos-rl
builds its model; they follow flash-attn's tensor layouts and keyword arguments (``softmax_scale``, ``causal``,
grouped-query heads) so the models run unchanged. SDPA picks torch's flash / memory-efficient kernel on a GPU.

What they do not cover (refused with a clear error, never computed wrongly): dropout during attention, sliding
windows, ALiBi, soft-capping, interleaved rotary layouts, and causal attention between sequences of different
lengths (flash-attn's bottom-right alignment) — none is used by the Qwen-VL policies.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - torch's convention

_UNSUPPORTED = ("window_size", "alibi_slopes", "softcap")


def _check(kwargs: dict[str, Any], dropout_p: float) -> None:
    if dropout_p:
        raise NotImplementedError("the SDPA stand-in for flash-attn does not apply attention dropout")
    for key in _UNSUPPORTED:
        value = kwargs.get(key)
        if value not in (None, (-1, -1), [-1, -1], 0, 0.0):
            raise NotImplementedError(f"the SDPA stand-in for flash-attn does not support {key}={value!r}")


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None, causal: bool) -> torch.Tensor:
    """One batch of sequences in flash-attn's (batch, seq, heads, dim) layout; k/v may have fewer heads (GQA)."""
    if causal and q.shape[1] != k.shape[1]:
        raise NotImplementedError("causal attention between sequences of different lengths is not supported")
    heads, kv_heads = q.shape[2], k.shape[2]
    if heads != kv_heads:
        if heads % kv_heads:
            raise ValueError(f"{heads} query heads cannot share {kv_heads} key/value heads")
        k = k.repeat_interleave(heads // kv_heads, dim=2)
        v = v.repeat_interleave(heads // kv_heads, dim=2)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal, scale=scale
    )
    return out.transpose(1, 2)


def flash_attn_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    **kwargs: Any,
) -> torch.Tensor:
    """flash-attn's ``flash_attn_func``: q (batch, seq_q, heads, dim), k/v (batch, seq_k, kv_heads, dim)."""
    _check(kwargs, dropout_p)
    return _attend(q, k, v, softmax_scale, causal)


def flash_attn_varlen_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int | None = None,
    max_seqlen_k: int | None = None,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    **kwargs: Any,
) -> torch.Tensor:
    """flash-attn's ``flash_attn_varlen_func``: sequences packed along the first axis, q (total_q, heads, dim), the
    i-th sequence at ``cu_seqlens[i]:cu_seqlens[i + 1]``; each attends only within itself."""
    _check(kwargs, dropout_p)
    starts_q = [int(x) for x in cu_seqlens_q.tolist()]
    starts_k = [int(x) for x in cu_seqlens_k.tolist()]
    if len(starts_q) != len(starts_k):
        raise ValueError("cu_seqlens_q and cu_seqlens_k describe different numbers of sequences")
    out = torch.empty(q.shape[0], q.shape[1], v.shape[2], dtype=q.dtype, device=q.device)
    for i in range(len(starts_q) - 1):
        a, b = starts_q[i], starts_q[i + 1]
        c, d = starts_k[i], starts_k[i + 1]
        if b > a:
            out[a:b] = _attend(q[None, a:b], k[None, c:d], v[None, c:d], softmax_scale, causal)[0]
    return out


def apply_rotary_emb(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    interleaved: bool = False,
    inplace: bool = False,
    **kwargs: Any,
) -> torch.Tensor:
    """flash-attn's ``apply_rotary_emb`` (non-interleaved): x (batch, seq, heads, dim), cos/sin (seq, rotary_dim / 2);
    the first ``rotary_dim`` features are rotated as halves, the rest pass through."""
    if interleaved:
        raise NotImplementedError("the SDPA stand-in for flash-attn supports only the non-interleaved rotary layout")
    if kwargs.get("seqlen_offsets") not in (None, 0) or kwargs.get("cu_seqlens") is not None:
        raise NotImplementedError("the SDPA stand-in for flash-attn rotates whole sequences from position 0 only")
    half = cos.shape[-1]
    seq = x.shape[1]
    c = cos[:seq, None, :].to(x.dtype)
    s = sin[:seq, None, :].to(x.dtype)
    x1, x2, rest = x[..., :half], x[..., half : 2 * half], x[..., 2 * half :]
    rotated = torch.cat((x1 * c - x2 * s, x1 * s + x2 * c, rest), dim=-1)
    if inplace:
        x.copy_(rotated)
        return x
    return rotated


def flash_attn_installed() -> bool:
    """Whether flash-attn (2 or 3) can be imported, as cosmos-rl checks it."""
    import importlib.util

    return any(importlib.util.find_spec(name) is not None for name in ("flash_attn", "flash_attn_3"))


def install(force: bool = False) -> bool:
    """Give cosmos-rl's ``FlashAttnMeta`` these functions where flash-attn is not installed (or ``force``); True when
    they were installed. Call before cosmos-rl builds its model: its layers take the functions when constructed."""
    if flash_attn_installed() and not force:
        return False
    from cosmos_rl.policy.kernel import modeling_utils

    registry = type(modeling_utils.FlashAttnMeta)._instances
    meta = registry.get(modeling_utils.FlashAttnMeta)
    if meta is None:
        # Made without its __init__ (which asks CUDA for the device's capability, to pick a flash-attn version that
        # is not installed); cosmos-rl's later init_flash_attn_meta() returns this instance as the singleton.
        meta = object.__new__(modeling_utils.FlashAttnMeta)
        meta.fa_version, meta.is_fa_installed, meta.enable_fp4 = None, False, False
        meta.torch_compile, meta.deterministic = False, False
        registry[modeling_utils.FlashAttnMeta] = meta
    meta.flash_attn_func = flash_attn_func
    meta.flash_attn_varlen_func = flash_attn_varlen_func
    meta.apply_rotary_emb = apply_rotary_emb
    return True
