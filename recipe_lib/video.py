"""Video I/O: probe, frame sampling for the critic, and contact-sheet thumbnails.

Decoding uses PyAV (FFmpeg). qwen-vl-utils' own torchvision reader is broken with torchvision 0.29 (``io.read_video``
was removed), so frames are read here and sized with the same rules Qwen2.5-VL's utilities use: the number of frames
from ``fps`` (rounded to a multiple of 2, at least 4), and each frame resized to multiples of 28 within ``min_pixels`` /
``max_pixels``, where ``total_pixels`` caps frames x pixels over the whole clip.

Memory stays bounded for any clip length: frames are decoded one at a time and only the sampled ones are kept.
Every failure is a :class:`~recipe_lib.errors.VideoError` naming the file and the problem.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import stat
import threading
from pathlib import Path
from typing import Any

import numpy as np

from recipe_lib.config import VideoSettings
from recipe_lib.errors import VideoError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
PATCH_FACTOR = 28  # patch 14 x spatial merge 2
FRAME_FACTOR = 2  # temporal patch
MIN_FRAMES = 4
VIDEO_MIN_TOKENS, VIDEO_MAX_TOKENS = 128, 768  # qwen-vl-utils' per-frame bounds, in merged tokens
VIDEO_MIN_PIXELS = VIDEO_MIN_TOKENS * PATCH_FACTOR * PATCH_FACTOR
VIDEO_MAX_PIXELS = VIDEO_MAX_TOKENS * PATCH_FACTOR * PATCH_FACTOR
MAX_DIMENSION = 8192  # refuse absurd frame sizes before decoding (8K DCI is 8192 wide)
MIN_DIMENSION = 14  # one vision patch: a smaller frame holds less than the critic's smallest unit of detail
# Still-image demuxers FFmpeg also opens (a PNG or JPEG renamed .mp4 would otherwise read as a one-frame "video").
IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe", "gif_pipe", "jpegls_pipe")


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    path: str
    frames: int
    fps: float
    duration: float
    width: int
    height: int
    codec: str


def _open(path: Path, header_only: bool = False):  # noqa: ANN202 - av container
    """Open a clip; ``header_only`` keeps FFmpeg from decoding a frame while it probes the streams (so an absurd
    frame size is refused before any memory is spent on it)."""
    import av

    if not path.exists():
        raise VideoError(
            f"video not found: {path}", hint="check the path; relative paths resolve from the working folder"
        )
    if path.is_dir():
        raise VideoError(f"expected a video file, got a folder: {path}")
    kind = special_file(path)
    if kind is not None:
        raise VideoError(f"not a regular file ({kind}): {path}", hint="only video files are read")
    if path.stat().st_size == 0:
        raise VideoError(f"video is an empty file (0 bytes): {path}", hint="re-export or re-download the clip")
    try:
        # skip_frame=all applies to the decoders FFmpeg opens while reading stream info, one option set per stream.
        options = {"stream_options": [{"skip_frame": "all"}] * 64} if header_only else {}
        container = av.open(str(path), **options)
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or f"{exc.__class__.__name__}: {exc}"
        raise VideoError(
            f"not a readable video: {path} ({why})",
            hint="the file is truncated or not a video container (mp4/mkv/webm/mov)",
        ) from exc
    fmt = container.format.name
    if fmt in IMAGE_FORMATS or fmt.endswith("_pipe"):
        container.close()
        kind = fmt.removesuffix("_pipe").upper() if fmt != "image2" else "still"
        raise VideoError(
            f"not a video: {path} is a {kind} image",
            hint="export the clip as a video (mp4/mkv/webm/mov); a single image cannot show motion",
        )
    if not container.streams.video:
        container.close()
        raise VideoError(f"no video stream in {path}", hint="the file holds no video track (audio only?)")
    return container


def probe(path: str | Path) -> VideoInfo:
    """Frames, fps, duration and size from the container (no full decode)."""
    path = Path(path)
    container = _open(path, header_only=True)
    try:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 0.0
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        check_frame_size(width, height, path)  # before anything is decoded
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        frames = int(stream.frames or 0)
        if frames == 0 and fps and duration:
            frames = int(round(duration * fps))
        if frames == 0:
            frames = sum(1 for _ in container.decode(stream))
        if not duration and fps:
            duration = frames / fps
        codec = stream.codec_context.name
    finally:
        container.close()
    if frames <= 0:
        raise VideoError(f"video has no frames: {path}", hint="the clip is empty or truncated")
    return VideoInfo(str(path), frames, fps or 0.0, duration, width, height, codec)


def check_frame_size(width: int, height: int, path: str | Path) -> None:
    """Refuse frame sizes the critic cannot use, from the header alone (nothing is decoded)."""
    if width <= 0 or height <= 0:
        raise VideoError(f"video has no frame size: {path}", hint="the file is corrupt; re-export it")
    if width > MAX_DIMENSION or height > MAX_DIMENSION:
        raise VideoError(
            f"frame size {width}x{height} is larger than {MAX_DIMENSION} pixels a side: {path}",
            hint="downscale the clip (e.g. to 1280 wide) before scoring; it was not decoded",
        )
    if width < MIN_DIMENSION or height < MIN_DIMENSION:
        raise VideoError(
            f"frame size {width}x{height} is smaller than {MIN_DIMENSION} pixels a side: {path}",
            hint="the clip holds too little picture to judge; check the export settings",
        )


def sample_indices(total_frames: int, video_fps: float, fps: float, max_frames: int) -> list[int]:
    """Evenly spaced frame indices at ``fps`` (Qwen2.5-VL's rule: a multiple of 2 frames, at least 4, at most
    ``max_frames``); short clips repeat frames so the temporal patch of 2 is always filled."""
    video_fps = video_fps or fps
    wanted = total_frames / video_fps * fps
    upper = max(FRAME_FACTOR, (max_frames // FRAME_FACTOR) * FRAME_FACTOR)
    n = min(max(wanted, MIN_FRAMES), upper, max(total_frames, MIN_FRAMES))
    n = max(FRAME_FACTOR, int(n // FRAME_FACTOR) * FRAME_FACTOR)
    return [int(round(x)) for x in np.linspace(0, total_frames - 1, n)]


def target_size(
    height: int, width: int, n_frames: int, settings: VideoSettings, factor: int = PATCH_FACTOR
) -> tuple[int, int]:
    """Resized (height, width), multiples of ``factor`` (28 for Qwen2.5-VL, 32 for Qwen3-VL), within the per-frame
    and whole-clip pixel budgets; the per-frame defaults are 128 to 768 tokens of ``factor`` x ``factor`` pixels, as
    qwen-vl-utils sets them for either family."""
    from qwen_vl_utils.vision_process import smart_resize

    min_pixels = settings.min_pixels if settings.min_pixels is not None else VIDEO_MIN_TOKENS * factor * factor
    max_pixels = VIDEO_MAX_TOKENS * factor * factor
    if settings.total_pixels is not None:
        max_pixels = max(min(max_pixels, settings.total_pixels / n_frames * FRAME_FACTOR), int(min_pixels * 1.05))
    if settings.max_pixels is not None:
        max_pixels = min(max_pixels, settings.max_pixels)
    min_pixels = min(min_pixels, max_pixels)  # an explicit per-frame cap wins over the default floor
    if max(height, width) / min(height, width) > 200:
        raise VideoError(f"frame aspect ratio {width}x{height} is too extreme (over 200:1)")
    h_bar, w_bar = smart_resize(height, width, factor=factor, min_pixels=int(min_pixels), max_pixels=int(max_pixels))
    # Under a small pixel cap a wide or tall frame's short side rounds down to 0 (1280x300 under 3 136 pixels):
    # give it one patch row and fit the long side in what the cap leaves, never a side of 0.
    if h_bar < factor or w_bar < factor:
        patches = max(1, int(max_pixels) // (factor * factor))  # what the cap allows
        long_side = min(patches, max(1, round(max(height, width) / min(height, width)))) * factor
        h_bar, w_bar = (factor, long_side) if width >= height else (long_side, factor)
    return h_bar, w_bar


def read_frames(path: str | Path, indices: list[int] | None = None, max_frames: int = 16) -> np.ndarray:
    """Decode the frames at ``indices`` (default: ``max_frames`` evenly spaced) as uint8 (T, H, W, 3).

    Decodes sequentially and keeps only wanted frames, so memory is O(len(indices)). A stream that ends before a
    wanted index raises :class:`VideoError` when it is truncated (more than a tenth of the frames its header lists, and
    more than 2, do not decode); a shortfall within that (frame counts estimated from the duration) is filled with the
    last decoded frame, so nothing is dropped from the count.
    """
    import av

    path = Path(path)
    info = probe(path)
    if indices is None:
        indices = [int(round(x)) for x in np.linspace(0, info.frames - 1, min(max_frames, info.frames))]
    wanted = sorted(set(indices))
    picked: dict[int, np.ndarray] = {}
    seen = 0  # frames decoded so far
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        target = iter(wanted)
        nxt = next(target, None)
        for position, frame in enumerate(container.decode(stream)):
            if nxt is None:
                break
            seen = position + 1
            if position == nxt:
                picked[position] = frame.to_ndarray(format="rgb24")
                nxt = next(target, None)
    except (av.error.FFmpegError, ValueError) as exc:
        if not picked:
            raise VideoError(f"cannot decode {path}: {exc}", hint="the file is corrupt or truncated") from exc
    finally:
        container.close()
    if not picked:
        raise VideoError(f"no decodable frames in {path}", hint="the file is corrupt or truncated")
    if nxt is not None and info.frames - seen > max(2, info.frames // 10):
        raise VideoError(
            f"video is truncated: its header lists {info.frames} frames but only {seen} decode: {path}",
            hint="re-export or re-download the clip",
        )
    # A stream a little shorter than its header said: wanted frames past its end repeat the last decoded frame.
    decoded = sorted(picked)
    out = [picked[i] if i in picked else picked[max([k for k in decoded if k <= i] or decoded[:1])] for i in indices]
    return np.stack(out)


@dataclasses.dataclass
class ModelVideo:
    """A clip ready for the processor: uint8 tensor (T, C, H, W), the fps its frames represent and, when known, the
    positions of the sampled frames in the clip (Qwen3-VL's processor writes timestamps from them)."""

    frames: object  # torch.Tensor
    sample_fps: float
    info: VideoInfo
    indices: tuple[int, ...] | None = None


def load_for_model(path: str | Path, settings: VideoSettings, factor: int = PATCH_FACTOR) -> ModelVideo:
    """Sample and resize a clip the way the critic expects (see module docstring); ``factor`` is the critic's pixels
    per merged token along a side (28 for Qwen2.5-VL, 32 for Qwen3-VL: ``recipe_lib.models.family.patch_factor``)."""
    import torch
    from torchvision.transforms.v2 import functional as tvf

    info = probe(path)
    if info.frames < 2:
        raise VideoError(
            f"video has a single frame (a still image): {path}",
            hint="nothing moves in it, so physical plausibility cannot be judged; export at least 2 frames",
        )
    indices = sample_indices(info.frames, info.fps, settings.fps, settings.max_frames)
    frames = read_frames(path, indices)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    height, width = target_size(info.height, info.width, len(indices), settings, factor)
    if (height, width) != (info.height, info.width):
        video = tvf.resize(video, [height, width], interpolation=tvf.InterpolationMode.BICUBIC, antialias=True)
    # The same rule as qwen-vl-utils: the sampled frames stand for the whole clip's duration.
    sample_fps = len(indices) / max(info.frames, 1) * info.fps if info.fps else settings.fps
    return ModelVideo(frames=video, sample_fps=float(sample_fps), info=info, indices=tuple(indices))


def fit_to_factor(video: ModelVideo, factor: int) -> ModelVideo:
    """``video`` with each side rounded to the nearest multiple of ``factor`` (at least one), resized only when a
    side is not one already: clips decoded for one critic family handed to the other (training decodes clips before
    the model is known)."""
    import torch
    from torchvision.transforms.v2 import functional as tvf

    frames: torch.Tensor = video.frames  # type: ignore[assignment]
    height, width = int(frames.shape[-2]), int(frames.shape[-1])
    if height % factor == 0 and width % factor == 0:
        return video
    size = [max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)]
    resized = tvf.resize(frames, size, interpolation=tvf.InterpolationMode.BICUBIC, antialias=True)
    return dataclasses.replace(video, frames=resized)


def visual_tokens(n_frames: int, height: int, width: int) -> int:
    """Visual tokens the language model sees for a sized clip (after the 2x2 merge and temporal patch of 2)."""
    return math.ceil(n_frames / FRAME_FACTOR) * (height // PATCH_FACTOR) * (width // PATCH_FACTOR)


def contact_sheet(path: str | Path, out_png: str | Path, n: int = 4, tile_height: int = 96) -> Path:
    """A PNG strip of ``n`` evenly spaced frames, each ``tile_height`` pixels tall."""
    from PIL import Image

    frames = read_frames(path, max_frames=n)
    tiles = []
    for frame in frames:
        img = Image.fromarray(frame)
        scale = tile_height / img.height
        tiles.append(img.resize((max(1, round(img.width * scale)), tile_height), Image.BILINEAR))
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + 2 * (len(tiles) - 1), tile_height), (255, 255, 255))
    x = 0
    for tile in tiles:
        sheet.paste(tile, (x, 0))
        x += tile.width + 2
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    # Unique per writer: the same clip listed twice gets its sheet drawn by two threads at once.
    tmp = out_png.with_name(f".{out_png.stem}.{os.getpid()}.{threading.get_ident()}.tmp.png")
    sheet.save(tmp, format="PNG")
    tmp.replace(out_png)
    return out_png


def special_file(path: str | Path, mode: int | None = None) -> str | None:
    """What ``path`` (links followed) is when it is not a regular file or a folder: a character device (``/dev/zero``
    reads forever), a FIFO (blocks on open until a writer comes), a socket, a block device; None for a regular file
    or a folder. Looked up with ``stat``, which never opens the file, so it cannot hang."""
    mode = os.stat(path).st_mode if mode is None else mode
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):  # nearly every file asked about: answered in one test
        return None
    for test, name in (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return None


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of the file's bytes (the content key of cached results)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _path_test(check: Any, path: Path) -> bool:
    try:
        return bool(check(path))
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a name over 255 bytes
        return False


def find_videos(inputs: list[str | Path]) -> list[Path]:
    """Expand folders (recursively), globs and files into a sorted, de-duplicated list of video paths."""
    import glob

    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if _path_test(Path.is_dir, p):
            found.extend(
                sorted(
                    # Anything but a folder: a device, a FIFO or a broken link named .mp4 becomes a counted skip.
                    q
                    for q in p.rglob("*")
                    if q.suffix.lower() in VIDEO_SUFFIXES and not _path_test(Path.is_dir, q)
                )
            )
        elif any(ch in str(item) for ch in "*?[") and not _path_test(Path.exists, p):
            matches = sorted(Path(m) for m in glob.glob(str(item), recursive=True))
            if not matches:
                raise VideoError(f"no files match {item}", hint="check the pattern and the folder it starts from")
            found.extend(m for m in matches if _path_test(Path.is_file, m))
        else:
            found.append(p)
    seen: set[str] = set()
    unique = []
    for p in found:
        key = os.path.realpath(p)  # never raises on a symlink loop (the clip is then skipped with the reason)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique
