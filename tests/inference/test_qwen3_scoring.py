"""Scoring with a Qwen3-VL critic (the tiny one, Cosmos-Reason2's family) on real mp4 clips, in both modes; the
prompt file's answer keys; vLLM request building for Qwen3-VL; the accel speed-ups staying off for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipe_lib.config import SamplingSettings
from recipe_lib.errors import ConfigError
from recipe_lib.prompts import PromptSpec, load_prompt
from support import demo_score_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def qwen3(tiny_qwen3_critic: Path):  # noqa: ANN201
    from recipe_lib.models.loading import load_critic

    return load_critic(str(tiny_qwen3_critic), device="cpu")


@pytest.fixture(scope="module")
def clips(synth_clips) -> list[Path]:  # noqa: ANN001
    return sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[:3]


def _video():  # noqa: ANN202
    from recipe_lib.profiles import get_profile

    return get_profile("demo").video


def test_expected_mode_reads_the_digit_right_after_the_assistant_turn(qwen3, clips) -> None:
    from recipe_lib.inference.hf import HFScorer

    scorer = HFScorer(qwen3, load_prompt("cosmos_reason2"), _video(), SamplingSettings(), mode="expected")
    prepared = [scorer.prepare({"video_url": str(c)}) for c in clips]
    for p in prepared:
        assert p.text.endswith("<|im_start|>assistant\n")  # answer_prefix "" : the digit comes first
        _, _, height, width = p.video.frames.shape
        assert height % 32 == 0 and width % 32 == 0  # sized to Qwen3-VL's 32-pixel grid
        assert "seconds>" in qwen3.processor.tokenizer.decode(p.encoded["input_ids"][0])
    rows = scorer.score_batch(prepared)
    assert len(rows) == len(clips)
    for row in rows:
        assert row["score"] in (1, 2, 3, 4, 5)
        assert abs(sum(row["probs"]) - 1) < 1e-5 and 1 <= row["expected_score"] <= 5
        assert 0 < row["digit_mass"] <= 1
    tagged = HFScorer(qwen3, load_prompt("video_reward_compact"), _video(), SamplingSettings(), mode="expected")
    assert tagged.prepare({"video_url": str(clips[0])}).text.endswith("<|im_start|>assistant\n<answer>\n")


def test_generate_mode_parses_in_the_prompts_format(qwen3, clips) -> None:
    from recipe_lib.inference.hf import HFScorer

    sampling = SamplingSettings(max_new_tokens=6, trials=2, seed=3)
    scorer = HFScorer(qwen3, load_prompt("cosmos_reason2"), _video(), sampling, mode="generate")
    rows = scorer.score_batch([scorer.prepare({"video_url": str(c)}) for c in clips[:2]])
    for row in rows:
        assert len(row["trials"]) == 2  # two sampled answers per clip (rows repeated: see requests.repeat_rows)
        for trial in row["trials"]:
            assert (trial["score"] in (1, 2, 3, 4, 5)) != (trial["error"] is not None)
            if trial["error"]:  # the untrained critic babbles: the line format says why nothing parsed
                assert trial["error"].startswith(("no line holding only a score", "answer", "empty output"))
        assert (row["score"] is None) == all(t["score"] is None for t in row["trials"])


def test_repeated_rows_give_the_same_logits(qwen3, clips) -> None:
    import torch

    from recipe_lib.inference.hf import HFScorer
    from recipe_lib.inference.requests import collate, repeat_rows

    scorer = HFScorer(qwen3, load_prompt("cosmos_reason2"), _video(), SamplingSettings(), mode="expected")
    prepared = [scorer.prepare({"video_url": str(c)}) for c in clips[:2]]
    batch = collate([p.encoded for p in prepared], qwen3.processor.tokenizer.pad_token_id)
    with torch.inference_mode():
        once = qwen3.model(**batch, use_cache=False, logits_to_keep=1).logits[:, -1]
        twice = qwen3.model(**repeat_rows(batch, 2), use_cache=False, logits_to_keep=1).logits[:, -1]
    assert torch.allclose(twice[0::2], once, atol=1e-5) and torch.allclose(twice[1::2], once, atol=1e-5)


def test_accel_speedups_stay_off_for_qwen3(qwen3, clips) -> None:
    from recipe_lib.inference.accel import Speedups, qwen_core
    from recipe_lib.inference.hf import HFScorer

    assert qwen_core(qwen3.model) is None  # the accel patches only know Qwen2.5-VL's modules
    prompt = load_prompt("cosmos_reason2")
    asked = HFScorer(qwen3, prompt, _video(), SamplingSettings(), mode="expected", speedups=Speedups.all("static"))
    sp = asked.speedups
    assert not (sp.batched_vision_attention or sp.padded_vision_mlp or sp.reuse_prefix) and sp.decoder == "hf"
    stock = HFScorer(qwen3, prompt, _video(), SamplingSettings(), mode="expected", speedups=Speedups.none())
    a = asked.score_batch([asked.prepare({"video_url": str(clips[0])})])[0]
    b = stock.score_batch([stock.prepare({"video_url": str(clips[0])})])[0]
    assert a["probs"] == pytest.approx(b["probs"], abs=1e-6)


def test_a_prompt_without_the_key_a_mode_needs_is_refused(qwen3) -> None:
    from recipe_lib.inference.hf import HFScorer

    bare = PromptSpec("bare", "Judge.", "Score it.")
    with pytest.raises(ConfigError, match="prompt bare has no answer_prefix: expected mode needs it"):
        HFScorer(qwen3, bare, _video(), SamplingSettings(), mode="expected")
    with pytest.raises(ConfigError, match="prompt bare has no answer_format: generate mode needs it"):
        HFScorer(qwen3, bare, _video(), SamplingSettings(), mode="generate")


def test_score_videos_end_to_end_on_a_qwen3_critic(tiny_qwen3_critic, synth_clips, tmp_path) -> None:  # noqa: ANN001
    from recipe_lib.inference.scoring import score_videos

    cfg = demo_score_config(tiny_qwen3_critic, [synth_clips.dataset_dir], tmp_path / "exp", prompt="cosmos_reason2")
    result = score_videos(cfg, progress=False)
    assert result.n_scored_now == result.n_inputs == 16 and not result.skipped and result.n_unparsed == 0
    again = score_videos(cfg, progress=False)
    assert again.n_cached == 16 and again.n_scored_now == 0
    bad = demo_score_config(tiny_qwen3_critic, [synth_clips.dataset_dir], tmp_path / "bad", prompt="cosmos_reason2")
    bad.prompt = str(_bare_prompt(tmp_path))
    with pytest.raises(ConfigError, match="has no answer_prefix"):
        score_videos(bad, progress=False)


def _bare_prompt(tmp: Path) -> Path:
    path = tmp / "bare.yaml"
    path.write_text("system_prompt: |\n  Judge.\nuser_prompt: |\n  Score it.\n")
    return path


def test_vllm_requests_for_qwen3(tiny_qwen3_critic, tiny_critic, clips) -> None:  # noqa: ANN001
    import numpy as np

    from recipe_lib.inference.score_config import ScoreConfig
    from recipe_lib.inference.vllm import VLLMScorer

    demo_cfg = ScoreConfig(inputs=[], out_dir="unused", model=str(tiny_qwen3_critic), video=_video())
    scorer = VLLMScorer(demo_cfg, load_prompt("cosmos_reason2"))
    assert scorer.family == "qwen3-vl" and scorer.patch_factor == 32
    prepared = scorer.prepare({"video_url": str(clips[0])})
    assert prepared.text.endswith("<|im_start|>assistant\n") and prepared.text.count("<|video_pad|>") == 1
    (request,) = scorer.requests([prepared])
    frames, metadata = request["multi_modal_data"]["video"]
    t, _, h, w = prepared.video.frames.shape
    assert isinstance(frames, np.ndarray) and frames.shape == (t, h, w, 3) and frames.dtype == np.uint8
    assert len(metadata["frames_indices"]) == t and metadata["fps"] == prepared.video.info.fps
    assert metadata["total_num_frames"] == prepared.video.info.frames
    assert request["mm_processor_kwargs"] == {"do_sample_frames": False, "do_resize": False}
    assert h % 32 == 0 and w % 32 == 0
    demo = ScoreConfig(inputs=[], out_dir="unused", model=str(tiny_critic), video=_video())
    qwen25 = VLLMScorer(demo, load_prompt("video_reward"))
    (old,) = qwen25.requests([qwen25.prepare({"video_url": str(clips[0])})])
    assert qwen25.family == "qwen2.5-vl" and isinstance(old["multi_modal_data"]["video"], np.ndarray)
    assert set(old["mm_processor_kwargs"]) == {"fps", "do_resize"}
