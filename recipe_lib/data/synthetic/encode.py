"""Encoding frames into deterministic mp4 files (H.264, MPEG-4 part 2 fallback).

Part of :mod:`recipe_lib.data.synthetic` (see its docstring for the clips and their labels).
"""

from __future__ import annotations

import functools
import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from recipe_lib.errors import RecipeError

# --------------------------------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def h264_encoder() -> str:
    """The first H.264 encoder PyAV offers (``libx264``, ``h264``, ``libopenh264``), else ``mpeg4``."""
    import av

    for name in ("libx264", "h264", "libopenh264"):
        try:
            codec = av.codec.Codec(name, "w")
        except Exception:  # noqa: BLE001 - any failure means the encoder is missing
            continue
        if "nvenc" not in codec.name and "vaapi" not in codec.name:
            return codec.name
    return "mpeg4"


def write_clip(frames: np.ndarray, path: str | Path, fps: float = 8) -> Path:
    """Encode ``frames`` (``(T, H, W, 3)`` uint8 RGB) as an mp4 at ``path``, atomically; return the path.

    H.264 4:2:0 for even sizes, 4:4:4 for odd sizes (so any size from 2x2 round-trips); one-frame clips are fine.
    """
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise RecipeError(f"frames must have shape (T, H, W, 3), got {arr.shape}")
    if arr.dtype != np.uint8:
        raise RecipeError(f"frames must be uint8 RGB, got dtype {arr.dtype}", hint="convert with np.clip(x, 0, 255)")
    if arr.shape[0] < 1:
        raise RecipeError("frames is empty: a clip needs at least one frame")
    if arr.shape[1] < 2 or arr.shape[2] < 2:
        raise RecipeError(f"frames are too small to encode: {arr.shape[2]}x{arr.shape[1]} (need at least 2x2)")
    if isinstance(fps, bool) or not isinstance(fps, int | float | Fraction) or not math.isfinite(fps) or fps <= 0:
        raise RecipeError(f"fps must be a positive number, got {fps!r}")
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    codec = h264_encoder()
    height, width = arr.shape[1:3]
    if codec == "mpeg4" and (height % 2 or width % 2):
        arr = np.pad(arr, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        height, width = arr.shape[1:3]
    even = height % 2 == 0 and width % 2 == 0
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p" if even or codec == "mpeg4" else "yuv444p"
            stream.codec_context.thread_count = 1
            if codec == "libx264":
                # With x264's macroblock-tree rate control the same frames sometimes encoded to different bytes from
                # run to run (seen at 112x112); without it the output is repeatable.
                stream.options = {"crf": "18", "preset": "medium", "x264-params": "mbtree=0"}
            elif codec == "mpeg4":
                stream.options = {"qscale": "3"}
            for index, image in enumerate(arr):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                frame.pts = index
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
