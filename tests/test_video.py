from pathlib import Path

import numpy as np
import pytest

from recipe_lib.config import VideoSettings
from recipe_lib.errors import VideoError
from recipe_lib.video import (
    contact_sheet,
    find_videos,
    load_for_model,
    probe,
    read_frames,
    sample_indices,
    visual_tokens,
)


@pytest.fixture(scope="module")
def one_clip(synth_clips) -> Path:
    return sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[0]


def test_probe_synthetic(one_clip):
    info = probe(one_clip)
    assert info.frames == 16 and info.width == 112 and info.height == 112 and info.fps > 0


def test_model_video_demo_size(one_clip):
    settings = VideoSettings(fps=4.0, total_pixels=None, max_pixels=112 * 112, min_pixels=56 * 56, max_frames=8)
    mv = load_for_model(one_clip, settings)
    t, c, h, w = mv.frames.shape
    assert (c, h, w) == (3, 112, 112) and t % 2 == 0 and 4 <= t <= 8
    assert visual_tokens(t, h, w) == (t // 2) * 16


def test_sample_indices_rules():
    assert sample_indices(10, 4.0, 16.0, 768) == list(range(10))
    idx = sample_indices(1000, 30.0, 2.0, 768)
    assert len(idx) % 2 == 0 and idx[0] == 0 and idx[-1] == 999
    assert len(sample_indices(100_000, 30.0, 16.0, 64)) == 64
    assert len(sample_indices(1, 8.0, 16.0, 768)) == 4  # a one-frame clip is repeated to fill the temporal patch


def test_every_real_clip_reads(shared_videos):
    """Real VideoPhy-2 clips, including names with commas, semicolons and apostrophes."""
    assert any("," in p.name for p in shared_videos) and any("'" in p.name for p in shared_videos)
    settings = VideoSettings(fps=2.0, total_pixels=None, max_pixels=224 * 224)
    for path in shared_videos:
        mv = load_for_model(path, settings)
        assert mv.frames.shape[0] >= 4 and mv.frames.shape[2] % 28 == 0 and mv.frames.shape[3] % 28 == 0
        assert mv.frames.shape[2] * mv.frames.shape[3] <= 224 * 224


def test_full_profile_budget_respected(shared_videos):
    settings = VideoSettings()  # fps 16, total_pixels 8192*28*28
    mv = load_for_model(shared_videos[0], settings)
    t, _, h, w = mv.frames.shape
    assert t * h * w <= settings.total_pixels * 1.05 * 2


def test_contact_sheet(one_clip, tmp_path):
    png = contact_sheet(one_clip, tmp_path / "sheet.png", n=4, tile_height=64)
    from PIL import Image

    img = Image.open(png)
    assert img.height == 64 and img.width >= 4 * 64


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "text", "folder"])
def test_bad_files_give_clear_errors(kind, one_clip, tmp_path):
    path = tmp_path / "bad.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = one_clip.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "text":
        path.write_text("this is not a video\n" * 20)
    elif kind == "folder":
        path.mkdir()
    with pytest.raises(VideoError) as exc:
        load_for_model(path, VideoSettings(fps=4.0, total_pixels=None, max_pixels=112 * 112))
    msg = exc.value.message
    assert str(path) in msg
    expected = {
        "missing": "not found",
        "empty": "0 bytes",
        "truncated": "",
        "text": "not a readable video",
        "folder": "folder",
    }[kind]
    assert expected in msg


def test_long_clip_sampling_is_bounded(tmp_path):
    from recipe_lib.data.synthetic import write_clip

    frames = np.zeros((600, 64, 64, 3), dtype=np.uint8)
    frames[:, :, :, 0] = np.arange(600, dtype=np.uint8)[:, None, None] % 255
    path = tmp_path / "long.mp4"
    write_clip(frames, path, fps=30)
    out = read_frames(path, sample_indices(600, 30.0, 1.0, 768))
    assert out.shape[0] == 20  # 20 s at 1 fps, only those frames kept


def test_find_videos_folder_glob_and_dedupe(synth_clips):
    folder = synth_clips.out_dir / "videos"
    found = find_videos([str(folder), str(folder / "*.mp4")])
    assert len(found) == len(list(folder.glob("*.mp4")))
    with pytest.raises(VideoError):
        find_videos([str(folder / "nothing-*.mp4")])
