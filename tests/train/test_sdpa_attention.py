"""The SDPA stand-in for flash-attn: flash-attn's layouts and semantics, checked against attention written out in
float64, and cosmos-rl's own Qwen2.5-VL vision attention running on it against transformers' implementation."""

from __future__ import annotations

import math

import pytest
import torch

from recipe_lib.train.cosmos_entry import sdpa_attention as sa


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float | None = None):
    """softmax(q k^T * scale [+ causal mask]) v for one sequence, (seq, heads, dim), in float64."""
    q, k, v = q.double(), k.double(), v.double()
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) * (scale or 1 / math.sqrt(q.shape[-1]))
    if causal:
        scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_flash_attn_func_matches_the_formula(causal, kv_heads) -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 7, 4, 16, generator=g)
    k, v = torch.randn(2, 7, kv_heads, 16, generator=g), torch.randn(2, 7, kv_heads, 16, generator=g)
    out = sa.flash_attn_func(q, k, v, causal=causal, softmax_scale=0.3)
    assert out.shape == q.shape
    for b in range(2):
        torch.testing.assert_close(out[b].double(), reference(q[b], k[b], v[b], causal, 0.3), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_keeps_every_sequence_to_itself(causal) -> None:
    g = torch.Generator().manual_seed(1)
    lengths = [5, 1, 9, 3]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    q = torch.randn(sum(lengths), 4, 8, generator=g)
    k, v = torch.randn(sum(lengths), 2, 8, generator=g), torch.randn(sum(lengths), 2, 8, generator=g)
    out = sa.flash_attn_varlen_func(q, k, v, cu, cu, max(lengths), max(lengths), causal=causal)
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        torch.testing.assert_close(out[a:b].double(), reference(q[a:b], k[a:b], v[a:b], causal), atol=1e-5, rtol=1e-5)
    # one packed row differs from attending over the whole pack: the segments are really kept apart
    whole = reference(q, k, v, causal)
    assert not torch.allclose(out.double(), whole, atol=1e-3)


def test_rotary_rotates_halves_and_passes_the_rest() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 6, 3, 10, generator=g)
    angle = torch.randn(6, 4, generator=g)  # rotary_dim 8 of 10 features
    out = sa.apply_rotary_emb(x, angle.cos(), angle.sin())
    x1, x2 = x[..., :4], x[..., 4:8]
    c, s = angle.cos()[None, :, None, :], angle.sin()[None, :, None, :]
    torch.testing.assert_close(out[..., :4], x1 * c - x2 * s)
    torch.testing.assert_close(out[..., 4:8], x1 * s + x2 * c)
    torch.testing.assert_close(out[..., 8:], x[..., 8:])
    # a rotation keeps each rotated pair's length
    torch.testing.assert_close(out[..., :4] ** 2 + out[..., 4:8] ** 2, x1**2 + x2**2)


def test_what_it_does_not_cover_is_refused() -> None:
    q = torch.randn(1, 4, 2, 8)
    with pytest.raises(NotImplementedError, match="dropout"):
        sa.flash_attn_func(q, q, q, dropout_p=0.1)
    with pytest.raises(NotImplementedError, match="window_size"):
        sa.flash_attn_func(q, q, q, window_size=(2, 0))
    with pytest.raises(NotImplementedError, match="different lengths"):
        sa.flash_attn_func(q, q[:, :2], q[:, :2], causal=True)
    with pytest.raises(NotImplementedError, match="interleaved"):
        sa.apply_rotary_emb(q, torch.ones(4, 2), torch.zeros(4, 2), interleaved=True)
    sa.flash_attn_func(q, q, q, window_size=(-1, -1))  # flash-attn's "no window" is accepted


@pytest.mark.cosmos
def test_cosmos_rl_vision_attention_runs_on_it_and_matches_transformers() -> None:
    """cosmos-rl's Qwen2.5-VL vision attention (varlen over windows + flash rotary), built after install(), gives
    transformers' eager Qwen2.5-VL vision attention's output for the same weights (within bfloat16, which cosmos-rl
    casts to before attending)."""
    pytest.importorskip("cosmos_rl")
    if sa.flash_attn_installed():
        pytest.skip("flash-attn is installed here: cosmos-rl uses it, the stand-in is not needed")
    from cosmos_rl.policy.kernel.modeling_utils import FlashAttnMeta
    from cosmos_rl.policy.model.vision_encoder import qwen2_5_vl as cosmos_vision
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as hf

    assert sa.install()
    assert FlashAttnMeta().flash_attn_varlen_func is sa.flash_attn_varlen_func  # the singleton cosmos-rl asks
    dim, heads, seq = 64, 4, 12
    ours = cosmos_vision.Qwen2_5_VLVisionAttention(dim, heads)
    config = hf.Qwen2_5_VLVisionConfig(hidden_size=dim, num_heads=heads)
    config._attn_implementation = "eager"
    theirs = hf.Qwen2_5_VLVisionAttention(config)
    theirs.load_state_dict(ours.state_dict())
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(seq, dim, generator=g)
    angle = torch.randn(seq, dim // heads // 2, generator=g)
    emb = torch.cat((angle, angle), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    cu = torch.tensor([0, 4, 12], dtype=torch.int32)
    with torch.no_grad():
        got = ours(hidden, cu_seqlens=cu, position_embeddings=(cos, sin), max_seqlen=8)
        want = theirs(hidden, cu_seqlens=cu, position_embeddings=(cos, sin))
    torch.testing.assert_close(got, want, atol=3e-2, rtol=3e-2)
    assert (got - want).abs().max() < 3e-2 and got.abs().mean() > 1e-2
