"""Request building shared by the transformers and vLLM backends, batch planning, and the vLLM scorer's CPU side
(vLLM itself is not installed here: its engine is imported only when a batch is scored)."""

from __future__ import annotations

import dataclasses
import importlib.util
import math

import pytest
import torch

from recipe_lib.config import SamplingSettings
from recipe_lib.errors import RecipeError
from recipe_lib.inference import requests as rq
from recipe_lib.inference.score_config import ScoreConfig
from recipe_lib.profiles import get_profile
from recipe_lib.prompts import ANSWER_PREFIX, load_prompt
from recipe_lib.video import ModelVideo, VideoInfo, load_for_model

HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.fixture(scope="module")
def processor(tiny_critic):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_critic)


def _clip(t: int, h: int, w: int, seed: int, fps: float = 4.0) -> ModelVideo:
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (t, 3, h, w), dtype=torch.uint8, generator=g)
    return ModelVideo(frames, fps, VideoInfo("x.mp4", t, fps, t / fps, w, h, "synthetic"))


def test_sampling_kwargs_per_mode():
    s = SamplingSettings(temperature=0.6, top_k=50, top_p=0.95, repetition_penalty=1.05, max_new_tokens=4096, seed=1)
    gen = rq.vllm_sampling_kwargs(dataclasses.replace(s, trials=3), "generate")
    assert gen == {
        "n": 3,
        "max_tokens": 4096,
        "seed": 1,
        "repetition_penalty": 1.05,
        "skip_special_tokens": True,
        "temperature": 0.6,
        "top_k": 50,
        "top_p": 0.95,
    }
    greedy = rq.vllm_sampling_kwargs(dataclasses.replace(s, temperature=0.0, top_k=0), "generate")
    assert greedy["temperature"] == 0.0 and "top_k" not in greedy
    exact = rq.vllm_sampling_kwargs(s, "expected", [11, 12, 13, 14, 15])
    assert exact == {"max_tokens": 1, "temperature": 0.0, "logprob_token_ids": [11, 12, 13, 14, 15], "seed": 1}
    with pytest.raises(RecipeError, match="token ids of the digits"):
        rq.vllm_sampling_kwargs(s, "expected")
    with pytest.raises(RecipeError, match="unknown scoring mode"):
        rq.vllm_sampling_kwargs(s, "vote")
    with pytest.raises(RecipeError, match="trials"):
        rq.vllm_sampling_kwargs(dataclasses.replace(s, trials=0), "generate")


def test_row_from_logprobs_renormalises_digits():
    digits = [11, 12, 13, 14, 15]
    logprobs = {12: math.log(0.1), 14: math.log(0.3), 99: math.log(0.5), 15: math.log(0.1)}
    row = rq.row_from_logprobs(logprobs, digits)
    assert row["probs"] == pytest.approx([0.0, 0.2, 0.0, 0.6, 0.2])
    assert row["digit_mass"] == pytest.approx(0.5)
    assert row["score"] == 4 and row["expected_score"] == pytest.approx(2 * 0.2 + 4 * 0.6 + 5 * 0.2)
    none = rq.row_from_logprobs({99: -0.1, 7: -3.0}, digits)
    assert none["score"] is None and "none of the digits" in none["parse_error"] and none["probs"] is None


def test_generate_row_majority_and_reasons():
    row = rq.generate_row(["<answer>\n4\n</answer>", "<answer>\n2\n</answer>", "<answer>4</answer>", "oops"])
    assert row["score"] == 4 and row["expected_score"] == pytest.approx(10 / 3)
    assert [t["score"] for t in row["trials"]] == [4, 2, 4, None] and row["trials"][3]["error"]
    tie = rq.generate_row(["<answer>1</answer>", "<answer>4</answer>"])
    assert tie["score"] == 2  # tie: rounded mean of the parsed scores (2.5 rounds to even)
    bad = rq.generate_row(["no answer here"])
    assert bad["score"] is None and bad["parse_error"] == bad["trials"][0]["error"]


def test_vllm_input_matches_transformers_prompt(processor):
    prompt = load_prompt("video_reward")
    video = get_profile("demo").video
    clip = _clip(8, 112, 112, seed=0)
    item = {"video_url": "/clips/a.mp4", "caption": "a ball falls"}
    text = rq.clip_text(processor, prompt, item, video, "expected", use_caption=True)
    assert text.endswith(ANSWER_PREFIX) and "a ball falls" in text and text.count("<|video_pad|>") == 1
    assert text == rq.render_prompt(processor, prompt, "/clips/a.mp4", video, "a ball falls", answer_prefix=True)
    request = rq.vllm_input(text, clip)
    assert request["prompt"] == text
    frames = request["multi_modal_data"]["video"]  # channels last, as vLLM's video parser takes them
    assert frames.shape == (8, 112, 112, 3) and frames.dtype.name == "uint8"
    assert (frames == clip.frames.permute(0, 2, 3, 1).numpy()).all()
    assert request["mm_processor_kwargs"] == {"fps": 4.0, "do_resize": False}
    generate_text = rq.clip_text(processor, prompt, item, video, "generate", use_caption=False)
    assert not generate_text.endswith(ANSWER_PREFIX) and "a ball falls" not in generate_text


def test_collate_matches_the_processor_on_a_list(processor):
    """Per-clip encodings, left-padded and stacked, equal what the processor returns for the whole batch."""
    prompt = load_prompt("video_reward")
    settings = get_profile("demo").video
    clips = [_clip(8, 112, 112, 1), _clip(4, 84, 140, 2, fps=2.0), _clip(6, 56, 224, 3)]
    texts = [
        rq.clip_text(processor, prompt, {"video_url": f"/c/{i}.mp4"}, settings, "expected", False) for i in range(3)
    ]
    processor.tokenizer.padding_side = "left"
    whole = processor(
        text=texts,
        videos=[c.frames for c in clips],
        **rq.processor_video_kwargs(clips),
        padding=True,
        return_tensors="pt",
    )
    batch = rq.collate(
        [rq.encode_clip(processor, t, c) for t, c in zip(texts, clips)], processor.tokenizer.pad_token_id
    )
    for key in ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw"):
        assert torch.equal(batch[key], whole[key]), key
    assert torch.allclose(batch["second_per_grid_ts"], torch.as_tensor(whole["second_per_grid_ts"]).float())
    assert batch["attention_mask"][:, -1].all() and not batch["attention_mask"][:, 0].all()  # left padding
    assert rq.clip_visual_tokens(clips[0]) == int(batch["video_grid_thw"][0].prod()) // 4
    with pytest.raises(RecipeError, match="empty batch"):
        rq.collate([], 0)


def test_plan_batches_groups_similar_counts():
    counts = [7600, 1900, 1900, 7600, 64, 1900, 7600, 64]
    batches = rq.plan_batches(counts, batch_size=3)
    assert batches == [[4, 7, 1], [2, 5, 0], [3, 6]]
    assert sorted(i for b in batches for i in b) == list(range(len(counts)))
    budget = rq.plan_batches(counts, batch_size=8, max_batch_tokens=8000)
    assert all(max(counts[i] for i in b) * len(b) <= 8000 or len(b) == 1 for b in budget)
    assert [len(b) for b in budget] == [4, 1, 1, 1, 1]
    arrival = [list(range(i, min(i + 3, len(counts)))) for i in range(0, len(counts), 3)]
    assert rq.describe_plan(batches, counts).padding_share < rq.describe_plan(arrival, counts).padding_share
    assert rq.describe_plan(rq.plan_batches([5, 5], 2), [5, 5]).padding_share == 0
    with pytest.raises(RecipeError):
        rq.plan_batches(counts, 0)
    with pytest.raises(RecipeError):
        rq.plan_batches(counts, 2, max_batch_tokens=0)


def test_estimate_visual_tokens_from_the_header(synth_clips):
    settings = get_profile("demo").video
    clip = sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[0]
    loaded = load_for_model(clip, settings)
    assert rq.estimate_visual_tokens(clip, settings) == rq.clip_visual_tokens(loaded) > 0


def test_batches_by_visual_tokens_reads_headers(synth_clips, tmp_path):
    settings = get_profile("demo").video
    clips = sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[:3]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    paths = [*clips, broken]
    batches = rq.batches_by_visual_tokens([f"e{i}" for i in range(4)], paths, settings, batch_size=2)
    assert batches[0][0] == "e3"  # unreadable: 0 tokens, first, so preparing it records the skip early
    assert sorted(e for b in batches for e in b) == ["e0", "e1", "e2", "e3"] and all(len(b) <= 2 for b in batches)
    with pytest.raises(RecipeError, match="entries"):
        rq.batches_by_visual_tokens(["a"], [], settings, 2)


def _cfg(model, mode="expected", dtype="auto"):
    demo = get_profile("demo")
    return ScoreConfig(
        inputs=[], out_dir="unused", model=str(model), mode=mode, video=demo.video, sampling=demo.sampling, dtype=dtype
    )


def test_vllm_scorer_prepares_without_vllm(tiny_critic, synth_clips):
    from recipe_lib.inference.vllm import VLLMScorer

    clip = sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[0]
    cfg = _cfg(tiny_critic)
    cfg.vllm.max_model_len, cfg.vllm.tensor_parallel_size = 8192, 2
    scorer = VLLMScorer(cfg, load_prompt("video_reward"))
    prepared = scorer.prepare({"video_url": str(clip)})
    assert prepared.text.endswith(ANSWER_PREFIX) and prepared.video.frames.ndim == 4
    (request,) = scorer.requests([prepared])
    assert request["prompt"] == prepared.text and request["multi_modal_data"]["video"].shape[-1] == 3
    args = scorer.engine_args()
    assert args["model"] == str(tiny_critic) and args["max_model_len"] == 8192 and args["tensor_parallel_size"] == 2
    assert args["enable_prefix_caching"] is True and args["load_format"] == "auto"
    assert args["limit_mm_per_prompt"]["video"] == 1 and args["seed"] == get_profile("demo").sampling.seed
    assert VLLMScorer(_cfg(tiny_critic, dtype="bf16"), load_prompt("video_reward")).engine_args()["dtype"] == "bfloat16"
    assert len(scorer.digit_ids) == 5
    if not HAS_VLLM:
        with pytest.raises(RecipeError, match="vllm package") as err:
            scorer.score_batch([prepared])
        assert "[gpu]" in err.value.hint


def test_vllm_scorer_user_mistakes(tiny_critic, tmp_path):
    from recipe_lib.inference.vllm import VLLMScorer

    with pytest.raises(RecipeError, match="mode vote is not allowed"):  # refused by the config itself
        VLLMScorer(_cfg(tiny_critic, mode="vote"), load_prompt("video_reward"))
    with pytest.raises(RecipeError, match="could not load the processor"):
        VLLMScorer(_cfg(tmp_path), load_prompt("video_reward"))
    with pytest.raises(RecipeError, match="unknown dtype"):
        VLLMScorer(_cfg(tiny_critic, dtype="int3"), load_prompt("video_reward")).engine_args()


def test_engine_and_endpoint_options_come_from_the_command_line(tiny_critic, tmp_path):
    from recipe_lib.cli import build_parser
    from recipe_lib.commands.score import score_config

    args = build_parser().parse_args(
        ["score", "x.mp4", "--out", str(tmp_path), "--model", str(tiny_critic), "--backend", "vllm"]
        + ["--gpu-memory-utilization", "0.5", "--max-model-len", "4096", "--tensor-parallel-size", "2"]
        + ["--no-enable-prefix-caching", "--load-format", "dummy", "--base-url", "http://127.0.0.1:8000/v1"]
        + ["--concurrency", "3", "--retries", "0"]
    )
    cfg = score_config(args)
    assert (cfg.vllm.gpu_memory_utilization, cfg.vllm.max_model_len, cfg.vllm.tensor_parallel_size) == (0.5, 4096, 2)
    assert cfg.vllm.enable_prefix_caching is False and cfg.vllm.load_format == "dummy"
    assert cfg.endpoint.base_url == "http://127.0.0.1:8000/v1" and (cfg.endpoint.concurrency, cfg.endpoint.retries) == (
        3,
        0,
    )
    defaults = score_config(build_parser().parse_args(["score", "x.mp4", "--out", str(tmp_path)]))
    assert defaults.vllm.enable_prefix_caching is True and defaults.endpoint.timeout == 120.0
