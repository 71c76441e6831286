"""The 3-D rotary positions of Qwen2.5-VL critics: fractional seconds per grid kept on the time axis."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from recipe_lib.inference.requests import clip_text, collate, encode_clip
from recipe_lib.models import positions
from recipe_lib.models.loading import load_critic
from recipe_lib.profiles import get_profile
from recipe_lib.prompts import load_prompt
from recipe_lib.video import load_for_model


@pytest.fixture(scope="module")
def critic(tiny_critic):  # noqa: ANN001, ANN201
    return load_critic(tiny_critic, device="cpu", dtype="float32")


def _batch(critic, clips, fps: float):  # noqa: ANN001, ANN202
    video = dataclasses.replace(get_profile("demo").video, fps=fps)
    prompt = load_prompt("video_reward_compact")
    encoded = []
    for clip in clips:
        item = {"video_url": str(clip)}
        frames = load_for_model(item["video_url"], video)
        text = clip_text(critic.processor, prompt, item, video, "expected", False)
        encoded.append(encode_clip(critic.processor, text, frames))
    return collate(encoded, critic.processor.tokenizer.pad_token_id)


def test_loader_installs_the_exact_time_axis(critic):  # noqa: ANN001
    inner = critic.model.model
    assert inner.get_rope_index.__func__ is positions.rope_index
    assert positions.install(critic.model)  # installing twice keeps one wrapper
    assert getattr(inner, positions.PATCHED).__func__ is not positions.rope_index


def test_whole_seconds_per_grid_match_transformers(critic, synth_clips):  # noqa: ANN001
    """At 2 fps (one second per grid) the time axis has no fraction: transformers' own positions, padding included."""
    clips = sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[:3]
    batch = _batch(critic, clips, fps=2.0)
    assert batch["second_per_grid_ts"].tolist() == [1.0, 1.0, 1.0]
    args = (batch["input_ids"], None, batch["video_grid_thw"], batch["second_per_grid_ts"], batch["attention_mask"])
    ours, our_deltas = critic.model.model.get_rope_index(*args)
    stock, stock_deltas = getattr(critic.model.model, positions.PATCHED)(*args)
    assert torch.equal(ours, stock) and torch.equal(our_deltas.view(-1), stock_deltas.view(-1))
    text = critic.processor.tokenizer("plain text, no video", return_tensors="pt")
    only_text, _ = critic.model.model.get_rope_index(text["input_ids"], None, None, None, text["attention_mask"])
    assert only_text[0, 0].tolist() == list(range(text["input_ids"].shape[1]))


def test_fractional_seconds_per_grid_advance_time(critic, synth_clips):  # noqa: ANN001
    """At 4 fps (half a second per grid, 2 tokens per second) grid k sits at time k after the block's start: the
    frames keep their order (transformers 4.57 truncates 0.5 to 0 first and puts them all at time 0)."""
    batch = _batch(critic, sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[:1], fps=4.0)
    assert batch["second_per_grid_ts"].tolist() == [0.5]
    t, h, w = batch["video_grid_thw"][0].tolist()
    merge = critic.model.config.vision_config.spatial_merge_size
    per_grid = (h // merge) * (w // merge)
    pos, deltas = critic.model.model.get_rope_index(
        batch["input_ids"], None, batch["video_grid_thw"], batch["second_per_grid_ts"], batch["attention_mask"]
    )
    ids = batch["input_ids"][0]
    video = torch.nonzero(ids == critic.model.config.video_token_id).flatten()
    assert len(video) == t * per_grid
    start = int(video[0])
    time = pos[0, 0, video] - start
    assert time.tolist() == [k for k in range(t) for _ in range(per_grid)]
    rows = pos[1, 0, video] - start
    assert rows.view(t, -1)[0].tolist() == [r for r in range(h // merge) for _ in range(w // merge)]
    after = pos[:, 0, int(video[-1]) + 1]
    assert after.tolist() == [int(pos[:, 0, video].max()) + 1] * 3  # text resumes after the largest vision position
    assert int(deltas[0]) == int(pos[0, 0].max()) + 1 - ids.shape[0]


def test_a_block_that_does_not_match_its_grid_is_an_error(critic, synth_clips):  # noqa: ANN001
    from recipe_lib.errors import RecipeError

    batch = _batch(critic, sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[:1], fps=4.0)
    wrong = batch["video_grid_thw"].clone()
    wrong[0, 0] += 2
    with pytest.raises(RecipeError, match="does not match its grid"):
        critic.model.model.get_rope_index(batch["input_ids"], None, wrong, batch["second_per_grid_ts"], None)
