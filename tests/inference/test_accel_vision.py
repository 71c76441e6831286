"""Packed vision attention, the fused (compiled) vision block and the float8 preparation, against the stock
transformers modules on the real tiny critics (CPU)."""

from __future__ import annotations

import pytest
import torch

from recipe_lib.errors import RecipeError
from recipe_lib.inference import accel

# (temporal, height, width) in 14-pixel patches: windows of 8x8 patches leave right and bottom edges of other sizes,
# and the clips' frames differ in size (full-attention chunks of different lengths).
GRIDS = [[4, 20, 38], [2, 16, 16], [6, 10, 14]]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def _model(folder):
    from recipe_lib.models.loading import load_critic

    return load_critic(folder, device="cpu", dtype="float32").model


def _pixels(model, grids: torch.Tensor, seed: int) -> torch.Tensor:
    width = model.model.visual.patch_embed.proj.weight[0].numel()
    return torch.randn(int(grids.prod(-1).sum()), width, generator=torch.Generator().manual_seed(seed))


def _vision(model, pixels, grids):
    with torch.no_grad():
        out = model.model.visual(pixels, grid_thw=grids)
    return out[0] if isinstance(out, tuple) else out  # Qwen3-VL also returns its deepstack features


def test_packed_plan_layout():
    cu = torch.tensor([0, 64, 128, 176, 240, 288, 288, 312], dtype=torch.int32)
    plan = accel.build_packed_plan(cu)
    assert (plan.rows, plan.chunks, plan.length) == (312, 6, 64)
    assert plan.mask.shape == (6, 1, 1, 64)
    assert plan.mask[:, 0, 0].sum(-1).tolist() == [64, 64, 48, 64, 48, 24]
    rows = torch.arange(312)
    packed = rows[plan.gather].reshape(6, 64)
    assert packed[2, :48].tolist() == list(range(128, 176)) and packed[2, 48:].eq(128).all()
    assert torch.equal(rows[plan.gather][plan.scatter], rows)  # every row comes back to its place
    same = accel.build_packed_plan(torch.tensor([0, 16, 32, 48]))
    assert (same.chunks, same.length, same.gather, same.mask) == (3, 16, None, None)


@pytest.mark.parametrize("family", ["qwen2.5-vl", "qwen3-vl"])
def test_packed_vision_attention_matches_stock(family, request):
    model = _model(request.getfixturevalue("tiny_critic" if family == "qwen2.5-vl" else "tiny_qwen3_critic"))
    grids = torch.tensor(GRIDS)
    pixels = _pixels(model, grids, seed=1)
    reference = _vision(model, pixels, grids)
    with accel.packed_vision_attention(model, True):
        assert accel.packed_vision_attention_enabled(model)
        packed = _vision(model, pixels, grids)
    assert not accel.packed_vision_attention_enabled(model)
    assert packed.shape == reference.shape
    assert _relative(packed, reference) < 1e-5


@pytest.mark.parametrize("backend", [None, "aot_eager"])
def test_fused_vision_block_matches_stock(tiny_critic, backend):
    """Eager and traced through torch.compile (fullgraph, the aot_eager backend: the graph inductor gets on a GPU):
    the same tower output as transformers' blocks; the MLP (128 wide) is padded to 256 inside."""
    model = _model(tiny_critic)
    grids = torch.tensor(GRIDS)
    pixels = _pixels(model, grids, seed=2)
    reference = _vision(model, pixels, grids)
    depth = len(model.model.visual.blocks)
    assert accel.enable_fused_vision_blocks(model, compile_backend=backend) == depth
    try:
        fused = _vision(model, pixels, grids)
        again = _vision(model, pixels[: int(grids[:1].prod())], grids[:1])  # another batch shape
        stacked = model.model.visual.blocks[0].__dict__["_recipe_fused_mlp"][1][0]
        assert stacked.shape[0] == 2 * 128  # gate and up, each padded to a multiple of 128
    finally:
        assert accel.disable_fused_vision_blocks(model) == depth
    assert _relative(fused, reference) < 1e-5
    assert _relative(again, _vision(model, pixels[: int(grids[:1].prod())], grids[:1])) < 1e-5


def test_fused_block_follows_weight_changes(tiny_critic):
    """The padded MLP weights are cached per block but rebuilt when a weight changes in place."""
    model = _model(tiny_critic)
    grids = torch.tensor(GRIDS[1:2])
    pixels = _pixels(model, grids, seed=3)
    with accel.fused_vision_blocks(model, True):
        before = _vision(model, pixels, grids)
        with torch.no_grad():
            model.model.visual.blocks[0].mlp.up_proj.weight.mul_(2.0)
        after = _vision(model, pixels, grids)
    assert not accel.fused_vision_blocks_enabled(model)
    assert _relative(after, _vision(model, pixels, grids)) < 1e-5
    assert _relative(after, before) > 1e-3


def test_float8_needs_a_capable_gpu(tiny_critic):
    model = _model(tiny_critic)
    with pytest.raises(RecipeError, match="float8") as info:
        accel.check_float8_device("cpu")
    assert "compute capability" in info.value.hint
    with pytest.raises(RecipeError, match="float8"):
        accel.apply_float8(model)


def test_float8_targets_and_exact_mlp_padding(tiny_critic):
    """The layers float8 would convert (every linear layer of the language model and the vision tower whose shapes
    the float8 kernels take, never the output head) and the vision MLP padded in place to such a shape: the same
    function, on the stock modules."""
    model = _model(tiny_critic)
    grids = torch.tensor(GRIDS)
    pixels = _pixels(model, grids, seed=4)
    reference = _vision(model, pixels, grids)
    mlp = model.model.visual.blocks[0].mlp
    mlp_width = mlp.gate_proj.out_features
    padded = accel.pad_vision_mlps(model, multiple=48)
    assert padded == len(model.model.visual.blocks) and mlp.gate_proj.out_features == -(-mlp_width // 48) * 48
    assert mlp.down_proj.in_features == mlp.gate_proj.out_features
    # no all-zero weight row for float8's row scaling (it would be 0/0 = NaN); the padded down columns are zero
    assert bool(mlp.gate_proj.weight.abs().amax(dim=1).gt(0).all()) and bool(
        mlp.up_proj.weight.abs().amax(dim=1).gt(0).all()
    )
    assert not mlp.down_proj.weight[:, mlp_width:].any()
    assert _relative(_vision(model, pixels, grids), reference) < 1e-6
    assert accel.float8_config("rowwise").activation_value_lb == accel.ACTIVATION_FLOOR > 0
    with pytest.raises(RecipeError, match="float8 scaling"):
        accel.float8_config("blockwise")
    targets = accel.float8_targets(model)
    names = set(targets)
    assert "lm_head" not in names and not any("patch_embed" in n for n in names)
    assert any(n.endswith("visual.blocks.0.attn.qkv") for n in names)
    assert any(n.endswith("language_model.layers.0.mlp.down_proj") for n in names)
    assert all(m.in_features % 16 == 0 and m.out_features % 16 == 0 for m in targets.values())


def test_score_precision_fp8_on_cpu_is_one_error_line(tiny_critic, tmp_path, capsys):
    import numpy as np

    from recipe_lib.cli import main
    from recipe_lib.data.synthetic import write_clip
    from recipe_lib.inference.score_config import ScoreConfig

    clip = tmp_path / "a.mp4"
    write_clip(np.zeros((8, 56, 56, 3), np.uint8), clip, fps=8)
    argv = ["score", str(clip), "--out", str(tmp_path / "o"), "--model", str(tiny_critic), "--device", "cpu"]
    assert main([*argv, "--precision", "fp8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: float8 (--precision fp8) runs on NVIDIA GPUs only") and "Traceback" not in err
    assert not (tmp_path / "o" / "scores.csv").exists()
    with pytest.raises(RecipeError, match="precision fp16"):
        ScoreConfig(inputs=[], out_dir=tmp_path, model="m", precision="fp16")
    with pytest.raises(RecipeError, match="served endpoint|--backend hf or vllm"):
        ScoreConfig(inputs=[], out_dir=tmp_path, model="m", precision="fp8", backend="openai")


def test_scorer_with_packed_and_fused_vision_scores_like_stock(tiny_critic):
    """Through HFScorer.score_batch (what ``plausibility score`` runs): p(1..5) of the stock path, of the packed
    attention alone and of the fused blocks (compiled, traced with aot_eager), each switch on its own."""
    from recipe_lib.config import SamplingSettings
    from recipe_lib.inference.hf import HFScorer
    from recipe_lib.models.loading import load_critic
    from recipe_lib.profiles import get_profile
    from recipe_lib.prompts import load_prompt
    from recipe_lib.video import ModelVideo, VideoInfo

    critic = load_critic(tiny_critic, device="cpu", dtype="float32")
    g = torch.Generator().manual_seed(11)
    clips = [
        ModelVideo(torch.randint(0, 256, (t, 3, h, w), dtype=torch.uint8, generator=g), 4.0,
                   VideoInfo(f"/c/{i}.mp4", t, 4.0, t / 4, w, h, "synthetic"))
        for i, (t, h, w) in enumerate([(8, 112, 140), (4, 84, 224)])
    ]  # fmt: skip

    def rows(speedups):
        scorer = HFScorer(critic, load_prompt("video_reward"), get_profile("demo").video, SamplingSettings(),
                          mode="expected", speedups=speedups)  # fmt: skip
        return scorer.score_batch([scorer.prepare_video({"video_url": c.info.path}, c) for c in clips])

    stock = rows(accel.Speedups.none())
    for speedups in (
        accel.Speedups(batched_vision_attention=False, packed_vision_attention=True),
        accel.Speedups(fused_vision_blocks=True, compile_vision=True, compile_backend="aot_eager"),
    ):
        for r, ref in zip(rows(speedups), stock):
            assert max(abs(a - b) for a, b in zip(r["probs"], ref["probs"])) < 1e-5
            assert r["score"] == ref["score"]
    assert not accel.fused_vision_blocks_enabled(critic.model)  # put back after each batch
    with pytest.raises(RecipeError, match="compile_vision"):
        accel.Speedups(compile_vision=True)


def test_vllm_scorer_builds_requests_on_the_worker(tiny_critic, tmp_path):
    """VLLMScorer.prepare (a worker thread) builds the engine request; score_batch's thread only hands it over. The
    engine limits reach vllm.LLM's arguments when set, and fp8 asks vLLM for its own float8."""
    import numpy as np

    from recipe_lib.data.synthetic import write_clip
    from recipe_lib.inference.requests import vllm_input
    from recipe_lib.inference.score_config import ScoreConfig, VLLMOptions
    from recipe_lib.inference.vllm import VLLMScorer
    from recipe_lib.profiles import get_profile
    from recipe_lib.prompts import load_prompt

    clip = tmp_path / "a.mp4"
    write_clip(np.random.default_rng(0).integers(0, 255, (8, 56, 56, 3)).astype(np.uint8), clip, fps=8)
    demo = get_profile("demo")

    def scorer(**kwargs):
        cfg = ScoreConfig(inputs=[], out_dir=tmp_path, model=str(tiny_critic), video=demo.video,
                          sampling=demo.sampling, backend="vllm", **kwargs)  # fmt: skip
        return VLLMScorer(cfg, load_prompt("video_reward"))

    plain = scorer()
    prepared = plain.prepare({"video_url": str(clip)})
    assert prepared.encoded is not None and plain.requests([prepared])[0] is prepared.encoded
    rebuilt = vllm_input(prepared.text, prepared.video, plain.family)
    assert np.array_equal(prepared.encoded["multi_modal_data"]["video"], rebuilt["multi_modal_data"]["video"])
    assert "max_num_seqs" not in plain.engine_args() and "quantization" not in plain.engine_args()
    tuned = scorer(vllm=VLLMOptions(max_num_seqs=64, max_num_batched_tokens=32768), precision="fp8").engine_args()
    assert (tuned["max_num_seqs"], tuned["max_num_batched_tokens"], tuned["quantization"]) == (64, 32768, "fp8")
    with pytest.raises(RecipeError, match="max_num_seqs 0"):
        VLLMOptions(max_num_seqs=0)
