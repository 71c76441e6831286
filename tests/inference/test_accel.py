"""The speed-ups of recipe_lib.inference.accel against the stock transformers path, on the real tiny critic (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recipe_lib.config import SamplingSettings
from recipe_lib.errors import RecipeError
from recipe_lib.inference import accel
from recipe_lib.inference.hf import HFScorer
from recipe_lib.profiles import get_profile
from recipe_lib.prompts import load_prompt
from recipe_lib.video import ModelVideo, VideoInfo

# (temporal, height, width) in 14-pixel patches: sizes whose 112-pixel windows leave right and bottom edges.
GRIDS = [[4, 20, 38], [2, 16, 16], [6, 10, 14]]


@pytest.fixture(scope="module")
def critic(tiny_critic):
    from recipe_lib.models.loading import load_critic

    return load_critic(tiny_critic, device="cpu", dtype="float32")


def _clip(t: int, h: int, w: int, seed: int) -> ModelVideo:
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (t, 3, h, w), dtype=torch.uint8, generator=g)
    return ModelVideo(frames, 4.0, VideoInfo(f"/clips/{seed}.mp4", t, 4.0, t / 4, w, h, "synthetic"))


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _vision(model, pixels, grids):
    with torch.no_grad():
        return model.model.visual(pixels, grid_thw=grids)


def test_chunk_plan_groups_equal_lengths():
    cu = torch.tensor([0, 64, 128, 176, 240, 288, 288, 312], dtype=torch.int32)
    plan = accel.build_chunk_plan(cu)
    assert plan.total == 312
    by_length = {length: (count, rows) for length, count, rows in plan.groups}
    assert {k: v[0] for k, v in by_length.items()} == {64: 3, 48: 2, 24: 1}
    assert by_length[48][1].tolist() == list(range(128, 176)) + list(range(240, 288))
    single = accel.build_chunk_plan(torch.tensor([0, 16, 32, 48]))
    assert single.groups == [(16, 3, None)]


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_batched_vision_attention_matches_stock(critic, impl):
    model = critic.model
    grids = torch.tensor(GRIDS)
    pixels = torch.randn(int(grids.prod(-1).sum()), 3 * 2 * 14 * 14, generator=torch.Generator().manual_seed(1))
    _, cu_windows = model.model.visual.get_window_index(grids)
    lengths = {b - a for a, b in zip(cu_windows[:-1], cu_windows[1:]) if b > a}
    assert len(lengths) >= 3, "the clips must have edge windows of other sizes than the interior ones"
    model.model.visual.config._attn_implementation = impl
    try:
        reference = _vision(model, pixels, grids)
        with accel.batched_vision_attention(model, True):
            assert accel.batched_vision_attention_enabled(model)
            fast = _vision(model, pixels, grids)
        assert not accel.batched_vision_attention_enabled(model)
    finally:
        model.model.visual.config._attn_implementation = "sdpa"
    assert fast.shape == reference.shape
    assert _relative(fast, reference) < 1e-5


class _Wrapped(torch.nn.Module):
    """A module around the convolution, as an adapter library puts one (``weight`` reaches the wrapped layer's)."""

    def __init__(self, base: torch.nn.Module) -> None:
        super().__init__()
        self.base_layer = base

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x)


@pytest.mark.parametrize("family", ["qwen2.5-vl", "qwen3-vl"])
def test_linear_patch_embed_matches_the_convolution(family, request):
    """The patch embedding as a matrix product: the same output and the same weight (and bias) gradients as the
    Conv3d, for both critic families; the context manager puts the model back, and a replaced ``proj`` (an adapter,
    say) falls back to the stock path."""
    from recipe_lib.models.loading import load_critic

    folder = request.getfixturevalue("tiny_critic" if family == "qwen2.5-vl" else "tiny_qwen3_critic")
    model = load_critic(folder, device="cpu", dtype="float32").model
    embed = model.model.visual.patch_embed
    width = embed.proj.weight[0].numel()
    pixels = torch.randn(96, width, generator=torch.Generator().manual_seed(3))

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        embed.zero_grad(set_to_none=True)
        out = embed(pixels)
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        return out.detach(), [p.grad.clone() for p in embed.proj.parameters()]

    reference, ref_grads = run()
    with accel.linear_patch_embed(model, True):
        assert accel.linear_patch_embed_enabled(model)
        fast, grads = run()
    assert not accel.linear_patch_embed_enabled(model)
    assert fast.shape == reference.shape == (96, embed.embed_dim)
    assert _relative(fast, reference) < 1e-5
    assert len(grads) == len(ref_grads) == (1 if family == "qwen2.5-vl" else 2)  # Qwen3-VL's conv has a bias
    assert all(_relative(g, r) < 1e-5 for g, r in zip(grads, ref_grads))
    assert accel.enable_linear_patch_embed(model) == 1
    original = embed.proj
    embed.proj = _Wrapped(original)
    try:
        with torch.no_grad():
            assert _relative(embed(pixels), reference) < 1e-6
    finally:
        embed.proj = original
        accel.disable_linear_patch_embed(model)


def test_padded_vision_mlp_matches_stock(critic):
    model = critic.model
    grids = torch.tensor(GRIDS[:2])
    pixels = torch.randn(int(grids.prod(-1).sum()), 1176, generator=torch.Generator().manual_seed(2))
    reference = _vision(model, pixels, grids)
    depth = len(model.model.visual.blocks)
    assert accel.enable_padded_vision_mlp(model, multiple=48) == depth  # 128 -> 144: every block padded
    try:
        assert model.model.visual.blocks[0].mlp._recipe_pad_to == 144
        with accel.batched_vision_attention(model, True):
            fast = _vision(model, pixels, grids)
    finally:
        assert accel.disable_padded_vision_mlp(model) == depth
    assert _relative(fast, reference) < 1e-5
    assert accel.enable_padded_vision_mlp(model, multiple=128) == 0  # already a multiple: nothing to do


def test_rotate_qk_matches_transformers():
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(2, 50, 4, 16, generator=g).unbind(0)
    emb = torch.randn(50, 8, generator=g).repeat(1, 2)
    cos, sin = emb.cos(), emb.sin()
    ref_q, ref_k = apply_rotary_pos_emb_vision(q, k, cos, sin)
    fast_q, fast_k = accel.rotate_qk(torch.stack([q, k], dim=1), cos, sin).unbind(1)
    assert _relative(fast_q, ref_q) < 1e-6 and _relative(fast_k, ref_k) < 1e-6


def test_gqa_decode_attention_matches_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    class Module(torch.nn.Module):
        num_key_value_groups = 3
        is_causal = True

    g = torch.Generator().manual_seed(4)
    q = torch.randn(2, 6, 1, 8, generator=g)
    k, v = torch.randn(2, 2, 2, 40, 8, generator=g).unbind(0)
    mask = torch.rand(2, 1, 1, 40, generator=g) > 0.3
    mask[:, :, :, 0] = True
    ref, _ = sdpa_attention_forward(Module(), q, k, v, mask, scaling=0.35)
    out, _ = accel.gqa_decode_attention(Module(), q, k, v, mask, scaling=0.35)
    assert out.shape == ref.shape == (2, 1, 6, 8)
    assert _relative(out, ref) < 1e-5


def test_sampler_rules():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(4, 100, generator=g)
    greedy = accel.sample_next(logits, None, accel.SamplerSettings())
    assert greedy.tolist() == logits.argmax(-1).tolist()
    top1 = accel.sample_next(logits, None, accel.SamplerSettings(temperature=1.0, top_k=1))
    assert top1.tolist() == greedy.tolist()
    tiny_p = accel.sample_next(logits, None, accel.SamplerSettings(temperature=1.0, top_p=1e-6))
    assert tiny_p.tolist() == greedy.tolist()  # top-p always keeps the most likely token
    top5 = set(logits.topk(5, dim=-1).indices.flatten().tolist())
    torch.manual_seed(0)
    draws = torch.stack([accel.sample_next(logits, None, accel.SamplerSettings(1.0, top_k=5)) for _ in range(50)])
    topk_rows = logits.topk(5, dim=-1).indices
    assert all(int(t) in set(topk_rows[r].tolist()) for row in draws for r, t in enumerate(row))
    assert set(draws.flatten().tolist()) <= top5 and len(set(draws[:, 0].tolist())) > 1
    torch.manual_seed(0)
    again = torch.stack([accel.sample_next(logits, None, accel.SamplerSettings(1.0, top_k=5)) for _ in range(50)])
    assert torch.equal(draws, again)
    seen = torch.zeros(4, 100, dtype=torch.bool)
    seen[torch.arange(4), greedy] = True
    penalised = accel.sample_next(logits, seen, accel.SamplerSettings(repetition_penalty=1e6))
    assert (penalised != greedy).all()


def _scorer(critic, mode, speedups, sampling=None, prompt="video_reward"):
    sampling = sampling or SamplingSettings(temperature=0.0, max_new_tokens=12, repetition_penalty=1.3)
    return HFScorer(critic, load_prompt(prompt), get_profile("demo").video, sampling, mode=mode, speedups=speedups)


CLIPS = [(8, 112, 112), (4, 84, 140), (6, 56, 224)]


def test_static_decoder_greedy_matches_generate(critic):
    """Left-padded batch of three clip sizes, repetition penalty on: the same greedy tokens as transformers."""
    clips = [_clip(*shape, seed=i) for i, shape in enumerate(CLIPS)]
    stock = _scorer(critic, "generate", accel.Speedups.none())
    fast = _scorer(critic, "generate", accel.Speedups(decoder="static", reuse_prefix=True))
    prepared = [stock.prepare_video({"video_url": f"/clips/{i}.mp4"}, c) for i, c in enumerate(clips)]
    assert len({p.encoded["input_ids"].shape[1] for p in prepared}) == 3  # really padded
    with torch.no_grad():
        inputs = stock._inputs(prepared)
        reference = stock._hf_generate(inputs)
    rows_stock, rows_fast = stock.score_batch(prepared), fast.score_batch(prepared)
    assert [r["raw_output"] for r in rows_fast] == [r["raw_output"] for r in rows_stock]
    decoder = accel.StaticDecoder(critic.model, stock.processor.tokenizer.pad_token_id, stock._eos_ids())
    with torch.no_grad():
        result = decoder.generate(inputs, accel.SamplerSettings(repetition_penalty=1.3), 12, trials=2)
    assert result.tokens.shape == (6, 12) and result.steps == 11
    assert torch.equal(result.tokens[::2], reference) and torch.equal(result.tokens[1::2], reference)
    assert fast.tokens_generated == sum(result.lengths) // 2


def test_static_decoder_step_logits_match_full_forward(critic):
    scorer = _scorer(critic, "generate", accel.Speedups.none())
    clip = _clip(8, 112, 140, seed=7)
    prepared = [scorer.prepare_video({"video_url": f"/clips/{i}.mp4"}, clip) for i in range(2)]
    with torch.no_grad():
        inputs = scorer._inputs(prepared)
        token = torch.tensor([17, 99])
        prefix = accel.PrefixReuse(critic.model)
        decoder = accel.StaticDecoder(critic.model, 0, scorer._eos_ids(), prefix=prefix)
        step = decoder.step_logits(inputs, token)
        assert prefix.misses == 1  # the unpadded batch reused the shared prefix
        extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        full = critic.model(
            input_ids=torch.cat([inputs["input_ids"], token[:, None]], 1),
            attention_mask=torch.cat([inputs["attention_mask"], torch.ones(2, 1, dtype=torch.long)], 1),
            logits_to_keep=1,
            **extra,
        ).logits[:, -1]
    assert _relative(step, full) < 1e-5


def test_prefix_reuse_matches_plain_forward(critic):
    stock = _scorer(critic, "expected", accel.Speedups.none())
    fast = _scorer(critic, "expected", accel.Speedups(reuse_prefix=True))
    same = [_clip(8, 112, 140, seed=8)] * 3
    prepared = [stock.prepare_video({"video_url": f"/clips/{i}.mp4"}, c) for i, c in enumerate(same)]
    reference = stock.score_batch(prepared)
    for _ in range(2):
        rows = fast.score_batch(prepared)
        for r, ref in zip(rows, reference):
            assert max(abs(a - b) for a, b in zip(r["probs"], ref["probs"])) < 1e-5
            assert r["score"] == ref["score"]
    assert (fast._prefix.misses, fast._prefix.hits) == (1, 1)
    # A padded batch cannot share positions: it falls back to the plain forward (and gives the stock answer).
    mixed = [_clip(*shape, seed=i) for i, shape in enumerate(CLIPS)]
    prepared = [stock.prepare_video({"video_url": f"/clips/{i}.mp4"}, c) for i, c in enumerate(mixed)]
    inputs = stock._inputs(prepared)
    assert fast._prefix.prefix_length(inputs["input_ids"], inputs["attention_mask"]) == 0
    for r, ref in zip(fast.score_batch(prepared), stock.score_batch(prepared)):
        assert max(abs(a - b) for a, b in zip(r["probs"], ref["probs"])) < 1e-5


def test_phase_timer_splits_a_batch(critic):
    scorer = _scorer(critic, "generate", accel.Speedups(decoder="static"))
    scorer.profile = True
    prepared = [scorer.prepare_video({"video_url": "/clips/a.mp4"}, _clip(4, 56, 56, seed=9))]
    scorer.score_batch(prepared)
    t = scorer.last_timing
    assert t["vision_s"] > 0 and t["prefill_s"] > 0 and t["decode_s"] > 0 and t["new_tokens"] >= 1
    assert t["vision_s"] + t["prefill_s"] + t["decode_s"] <= t["model_s"] * 1.01


def test_user_mistakes_are_recipe_errors(critic):
    with pytest.raises(RecipeError, match="unknown decoder"):
        accel.Speedups(decoder="turbo")
    with pytest.raises(RecipeError, match="CUDA"):
        accel.StaticDecoder(critic.model, 0, [1], use_graph=True)
    with pytest.raises(RecipeError, match="no Qwen2.5-VL vision attention"):
        accel.enable_batched_vision_attention(torch.nn.Linear(2, 2))
    assert accel.Speedups.for_device("cpu").decoder == "hf"
    assert accel.Speedups.for_device("cuda").decoder == "graph"


SMALL = {
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rope_scaling": {"type": "mrope", "mrope_section": [8, 12, 12]},
    "vision_config": {
        "depth": 4,
        "hidden_size": 128,
        "intermediate_size": 340,
        "num_heads": 2,
        "out_hidden_size": 256,
        "fullatt_block_indexes": [1, 3],
    },
}


def test_qwen_7b_architecture_from_config(tiny_critic):
    from transformers import AutoTokenizer

    from recipe_lib.models import arch

    assert arch.count_parameters("qwen2.5-vl-7b") == 8_292_166_656  # Qwen2.5-VL-7B-Instruct / Cosmos-Reason1-7B
    tok = AutoTokenizer.from_pretrained(tiny_critic)
    config = arch.architecture_config("qwen2.5-vl-7b", tok)
    assert config.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert config.text_config.vocab_size == 152064 and config.vision_config.fullatt_block_indexes == [7, 15, 23, 31]
    assert config.vision_config.intermediate_size == 3420 and config.text_config.num_key_value_heads == 4
    with pytest.raises(RecipeError, match="unknown architecture"):
        arch.architecture_config("qwen9")
    with pytest.raises(RecipeError, match="unknown architecture key"):
        arch.architecture_config("qwen2.5-vl-7b", overrides={"hiden_size": 1})


def test_scaled_down_random_critic_scores_like_stock(tiny_critic):
    """The random-weight builder on CPU (shapes scaled down), scored with every speed-up against the stock path;
    its vision MLP (340) is padded to 384 by the default rule."""
    from recipe_lib.models.arch import build_random_critic

    critic = build_random_critic(tokenizer_from=tiny_critic, device="cpu", dtype="float32", overrides=SMALL)
    assert critic.model.config.text_config.vocab_size == 152064
    stock = _scorer(critic, "expected", accel.Speedups.none())
    fast = _scorer(critic, "expected", accel.Speedups.all("static"))
    prepared = [stock.prepare_video({"video_url": f"/c/{i}.mp4"}, _clip(4, 112, 140, seed=10)) for i in range(2)]
    with accel.padded_vision_mlp(critic.model, True):
        assert critic.model.model.visual.blocks[0].mlp._recipe_pad_to == 384
    for r, ref in zip(fast.score_batch(prepared), stock.score_batch(prepared)):
        assert max(abs(a - b) for a, b in zip(r["probs"], ref["probs"])) < 1e-5


def test_vision_paths_add_one_switch_each():
    """``--vision-path``: each path adds one change to the one before; auto is fused on CUDA, batched on CPU."""
    cuda = {v: accel.Speedups.for_device("cuda", v) for v in accel.VISION_PATHS}
    assert not cuda["stock"].batched_vision_attention and not cuda["stock"].padded_vision_mlp
    assert cuda["batched"].batched_vision_attention and cuda["batched"].padded_vision_mlp
    assert cuda["packed"].packed_vision_attention and not cuda["packed"].fused_vision_blocks
    assert cuda["fused"].fused_vision_blocks and not cuda["fused"].compile_vision
    assert cuda["compiled"].compile_vision and cuda["auto"] == cuda["fused"]
    assert all(s.decoder == "graph" for s in cuda.values())
    cpu = accel.Speedups.for_device("cpu")
    assert cpu == accel.Speedups.for_device("cpu", "batched") and cpu.linear_patch_embed and not cpu.padded_vision_mlp
    with pytest.raises(RecipeError, match="unknown vision path"):
        accel.Speedups.for_device("cpu", "turbo")


def test_vision_path_is_a_scoring_option_with_the_same_scores(tiny_critic, synth_clips, tmp_path):
    """The same clips scored through the stock tower and the fused one (CPU, float32): the same p(1..5)."""
    from recipe_lib.inference.score_config import ScoreConfig
    from recipe_lib.inference.scoring import score_videos

    clips = sorted(str(p) for p in Path(synth_clips.out_dir, "videos").glob("*.mp4"))[:3]
    probs = {}
    for path in ("stock", "fused"):
        cfg = ScoreConfig(
            inputs=clips, out_dir=tmp_path / path, model=str(tiny_critic), device="cpu", batch_size=3, vision_path=path
        )
        probs[path] = [r["probs"] for r in score_videos(cfg, progress=False).rows]
    assert len(probs["stock"]) == 3
    for a, b in zip(probs["stock"], probs["fused"]):
        assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4
    with pytest.raises(RecipeError, match="vision_path"):
        ScoreConfig(inputs=clips, out_dir=tmp_path / "bad", model=str(tiny_critic), vision_path="turbo")
