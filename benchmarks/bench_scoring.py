"""Scoring throughput benchmark: videos/s of the real scoring code, per visual-token budget, batch size, mode and
speed-up, each row next to the naive per-video baseline measured in the same run.

CPU (the demo critic, built on first use)::

    python benchmarks/bench_scoring.py --quick            # < 2 minutes
    python benchmarks/bench_scoring.py                    # the CPU sweep

GPU (Qwen2.5-VL-7B's architecture with random weights, or a real checkpoint folder)::

    python benchmarks/bench_scoring.py --arch qwen2.5-vl-7b --random-weights --device cuda
    python benchmarks/bench_scoring.py --model /models/Cosmos-Reason1-7B --device cuda

Frames are synthesised as uint8 tensors at the size the recipe's sizing rules give for a 5 s 720p clip, so the
benchmark needs no video decoder on the GPU machine; decoding is measured on its own (``video_decode_s``) where PyAV is
installed. Clips flow as in ``plausibility score``: worker threads prepare the next batch (prompt, processor) while the
model runs the current one. Results are JSON (``--out``); ``--render FILE`` prints a Markdown table of a result file.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from recipe_lib.config import SamplingSettings, VideoSettings  # noqa: E402
from recipe_lib.errors import RecipeError  # noqa: E402
from recipe_lib.profiles import get_profile  # noqa: E402

SCHEMA = "plausibility-bench/1"

# --------------------------------------------------------------------------------------------------------------------
# workloads


@dataclasses.dataclass(frozen=True)
class Workload:
    """A source clip (frames, fps, height, width) and the sampling settings that size it for the critic."""

    name: str
    source_frames: int
    source_fps: float
    height: int
    width: int
    video: VideoSettings

    def sized(self) -> tuple[int, int, int]:
        """(frames, height, width) after the recipe's sampling and sizing rules."""
        from recipe_lib.video import sample_indices, target_size

        n = len(sample_indices(self.source_frames, self.source_fps, self.video.fps, self.video.max_frames))
        h, w = target_size(self.height, self.width, n, self.video)
        return n, h, w

    def visual_tokens(self) -> int:
        from recipe_lib.video import visual_tokens

        return visual_tokens(*self.sized())


def workloads() -> dict[str, Workload]:
    demo = get_profile("demo").video
    # A 5 s 720p clip at 16 fps: at fps 4 and 2048*28*28 pixels it gives ~1.9 k visual tokens (20 frames of
    # 280x532); at the recipe's inference settings (fps 16, 8192*28*28) ~7.6 k (80 frames of 280x532).
    return {
        "demo": Workload("demo", 16, 8.0, 112, 112, demo),
        "2k": Workload("2k", 81, 16.0, 720, 1280, VideoSettings(fps=4.0, total_pixels=2048 * 28 * 28)),
        "7.8k": Workload("7.8k", 81, 16.0, 720, 1280, VideoSettings(fps=16.0, total_pixels=8192 * 28 * 28)),
    }


# --------------------------------------------------------------------------------------------------------------------
# scenarios


MODES = {
    # name: (scoring mode, prompt file, new tokens)
    "generate": ("generate", "video_reward", 16),
    "expected": ("expected", "video_reward", 0),
    "thinking": ("generate", "video_reward_with_thinking", 512),
}

_NONE = {"batched_vision_attention": False, "decoder": "hf", "pin_memory": False}
_ATTN = {"batched_vision_attention": True, "decoder": "hf", "pin_memory": True}
_MLP = {**_ATTN, "padded_vision_mlp": True}
_FAST = {**_MLP, "reuse_prefix": True}
VARIANTS = {
    # name: (speed-ups, attention implementation); each adds one change to the one before
    "naive": (_NONE, "sdpa"),  # per-video generate, the baseline of every row
    "stock": (_NONE, "sdpa"),
    "stock-eager": (_NONE, "eager"),
    "attn": (_ATTN, "sdpa"),  # + batched vision attention, fused rotary, pinned host memory
    "attn+mlp": (_MLP, "sdpa"),  # + vision MLP padded to 3456
    "fast": (_FAST, "sdpa"),  # + shared prompt prefix computed once
    "static": ({**_FAST, "decoder": "static"}, "sdpa"),  # + static cache, device-side sampling
    "graph": ({**_FAST, "decoder": "graph"}, "sdpa"),  # + each decode step replayed as a CUDA graph
    # vision tower variants, each on top of "fast" (one switch each):
    "packed": ({**_FAST, "packed_vision_attention": True}, "sdpa"),  # all chunks of a block in one attention call
    "fused": ({**_FAST, "fused_vision_blocks": True}, "sdpa"),  # + each vision block as one function (eager)
    "compiled": ({**_FAST, "fused_vision_blocks": True, "compile_vision": True}, "sdpa"),  # + torch.compile'd
    "fused-graph": ({**_FAST, "decoder": "graph", "fused_vision_blocks": True}, "sdpa"),  # graph decode, fused tower
}


@dataclasses.dataclass
class Scenario:
    workload: str
    mode: str
    batch: int
    variant: str
    videos: int
    warmup_batches: int = 1
    new_tokens: int | None = None  # overrides the mode's default
    order: str = "uniform"  # uniform | mixed-arrival | mixed-planned

    @property
    def key(self) -> str:
        tokens = f"-{self.new_tokens}" if self.new_tokens else ""
        return f"{self.workload}/{self.mode}{tokens}/bs{self.batch}/{self.variant}/{self.order}"


def gpu_plan() -> list[Scenario]:
    """Rows on a GPU, most important first (a time limit cuts the tail)."""
    s = Scenario
    return [
        s("2k", "generate", 1, "naive", 4),
        s("2k", "expected", 16, "fast", 64),
        s("2k", "expected", 32, "fast", 64),
        s("2k", "generate", 16, "graph", 32),
        s("2k", "thinking", 32, "graph", 32),
        s("7.8k", "generate", 1, "naive", 3),
        s("7.8k", "expected", 8, "fast", 16),
        s("7.8k", "expected", 4, "fast", 16),
        s("2k", "expected", 1, "stock", 8),
        s("2k", "expected", 1, "attn", 8),
        s("2k", "expected", 1, "attn+mlp", 8),
        s("2k", "expected", 1, "fast", 8),
        s("2k", "expected", 16, "stock", 32),
        s("2k", "expected", 16, "attn", 32),
        s("2k", "expected", 16, "attn+mlp", 32),
        s("2k", "generate", 8, "stock", 16),
        s("2k", "generate", 8, "fast", 16),
        s("2k", "generate", 8, "static", 16),
        s("2k", "generate", 8, "graph", 16),
        s("2k", "thinking", 16, "graph", 32),
        s("7.8k", "expected", 1, "stock", 4),
        s("7.8k", "expected", 1, "fast", 4),
        s("7.8k", "expected", 8, "attn", 16),
        s("7.8k", "generate", 8, "graph", 16),
        s("2k", "expected", 1, "stock-eager", 4),
        s("mixed", "expected", 8, "fast", 32, order="mixed-arrival"),
        s("mixed", "expected", 8, "fast", 32, order="mixed-planned"),
        s("2k", "thinking", 8, "fast", 8, warmup_batches=0),
    ]


def cpu_plan(quick: bool) -> list[Scenario]:
    s = Scenario
    if quick:
        rows = []
        for w in ("demo", "2k"):
            rows += [
                s(w, "generate", 1, "naive", 2),
                s(w, "expected", 1, "stock", 2),
                s(w, "expected", 4, "attn", 4),
                s(w, "generate", 4, "stock", 4),
                s(w, "generate", 4, "static", 4),
                s(w, "thinking", 4, "static", 4, new_tokens=64),
            ]
        return rows + [
            s("mixed", "expected", 4, "attn", 8, order="mixed-arrival"),
            s("mixed", "expected", 4, "attn", 8, order="mixed-planned"),
        ]
    rows = []
    for w in ("demo", "2k", "7.8k"):
        rows += [
            s(w, "generate", 1, "naive", 4),
            s(w, "expected", 1, "stock", 4),
            s(w, "expected", 1, "attn", 4),
            s(w, "expected", 8, "attn", 16),
            s(w, "expected", 8, "fast", 16),
            s(w, "generate", 8, "stock", 8),
            s(w, "generate", 8, "static", 8),
            s(w, "thinking", 8, "static", 8),
        ]
    return rows + [
        s("mixed", "expected", 8, "attn", 16, order="mixed-arrival"),
        s("mixed", "expected", 8, "attn", 16, order="mixed-planned"),
    ]


# --------------------------------------------------------------------------------------------------------------------
# environment


def environment(device: str) -> dict[str, Any]:
    import torch
    import transformers

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "device": device,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    try:
        import tokenizers

        env["tokenizers"] = tokenizers.__version__
    except ImportError:
        env["tokenizers"] = None
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        env.update(
            device_name=torch.cuda.get_device_name(device),
            device_memory_gb=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
            cuda=torch.version.cuda,
        )
    else:
        env["device_name"] = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return env


# --------------------------------------------------------------------------------------------------------------------
# measurement helpers


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def synthetic_video(workload: Workload, seed: int = 0) -> Any:
    """A sized clip as the decoder and resizer would hand it over: uint8 (T, 3, H, W), smooth moving content."""
    import torch

    from recipe_lib.video import ModelVideo, VideoInfo

    t, h, w = workload.sized()
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 256, (1, 3, h // 14 + 1, w // 14 + 1), dtype=torch.uint8, generator=g).float()
    frame = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    shifts = torch.arange(t) * 3
    frames = torch.stack([torch.roll(frame[0], int(s), dims=-1) for s in shifts]).clamp(0, 255).to(torch.uint8)
    info = VideoInfo(
        path=f"synthetic-{workload.name}",
        frames=workload.source_frames,
        fps=workload.source_fps,
        duration=workload.source_frames / workload.source_fps,
        width=workload.width,
        height=workload.height,
        codec="synthetic",
    )
    return ModelVideo(frames=frames, sample_fps=t / workload.source_frames * workload.source_fps, info=info)


def measure_video_decode(workload: Workload, cache_dir: Path, reps: int = 3) -> dict[str, Any]:
    """Seconds to decode and size one clip of the workload's source shape from a real mp4 (PyAV)."""
    try:
        import av  # noqa: F401
    except ImportError:
        return {"video_decode_s": None, "video_decode_note": "PyAV is not installed here; measured on CPU runs"}
    import numpy as np

    from recipe_lib.data.synthetic import write_clip
    from recipe_lib.video import load_for_model

    path = cache_dir / f"source-{workload.source_frames}x{workload.height}x{workload.width}.mp4"
    if not path.is_file():
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, (workload.height // 16 + 1, workload.width // 16 + 1, 3)).astype(np.float32)
        up = np.kron(base, np.ones((16, 16, 1), np.float32))[: workload.height, : workload.width]
        frames = np.stack([np.roll(up, 4 * i, axis=1) for i in range(workload.source_frames)]).astype(np.uint8)
        write_clip(frames, path, fps=workload.source_fps)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        load_for_model(path, workload.video)
        times.append(time.perf_counter() - start)
    return {"video_decode_s": statistics.median(times), "video_decode_note": "PyAV decode + resize of a 5 s mp4"}


def measure_preprocess(scorer: Any, video: Any, reps: int = 3) -> float:
    """Seconds of CPU work per clip in the scorer's ``prepare`` (prompt + processor), single-threaded median."""
    times = []
    for i in range(reps):
        start = time.perf_counter()
        scorer.prepare_video({"video_url": f"/clips/probe-{i}.mp4"}, video)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak_memory(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (process peak)


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()


def run_pipeline(
    scorer: Any,
    jobs: list[tuple[dict[str, Any], Any]],
    batches: list[list[int]],
    workers: int,
    stats: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Score ``jobs`` batch by batch, preparing the next batch on worker threads while the model runs (as
    ``recipe_lib.inference.scoring.score_videos`` does). ``stats['score_batch_s']`` sums the time inside
    ``score_batch`` (which ends on a host read of the results, so the device is done) and ``stats['wait_s']`` the
    time spent waiting for prepared clips."""
    rows: list[dict[str, Any]] = []
    stats = stats if stats is not None else {}
    stats.setdefault("score_batch_s", 0.0)
    stats.setdefault("wait_s", 0.0)
    with cf.ThreadPoolExecutor(max_workers=workers) as pool:

        def submit(indices: list[int]) -> list[Any]:
            return [pool.submit(scorer.prepare_video, *jobs[i]) for i in indices]

        pending = submit(batches[0])
        for b in range(len(batches)):
            current = pending
            if b + 1 < len(batches):
                pending = submit(batches[b + 1])
            t0 = time.perf_counter()
            ready = [f.result() for f in current]
            t1 = time.perf_counter()
            rows.extend(scorer.score_batch(ready))
            stats["wait_s"] += t1 - t0
            stats["score_batch_s"] += time.perf_counter() - t1
    return rows


# --------------------------------------------------------------------------------------------------------------------
# one row


@dataclasses.dataclass
class Context:
    critic: Any
    device: str
    workers: int
    videos: dict[str, Any]
    tokens: dict[str, int]
    preprocess: dict[str, float]
    decode: dict[str, dict[str, Any]]
    seq_len: dict[tuple[str, str], int]
    compile_backend: str = "inductor"  # for the variants that compile the vision blocks


def make_scorer(ctx: Context, sc: Scenario, video: VideoSettings) -> Any:
    from recipe_lib.inference.accel import Speedups
    from recipe_lib.inference.hf import HFScorer
    from recipe_lib.prompts import load_prompt

    mode, prompt_name, new_tokens = MODES[sc.mode]
    speed, attn = VARIANTS[sc.variant]
    sampling = dataclasses.replace(SamplingSettings(), max_new_tokens=sc.new_tokens or new_tokens or 1)
    set_attention(ctx.critic.model, attn)
    speedups = Speedups(**{**speed, "compile_backend": ctx.compile_backend})
    return HFScorer(ctx.critic, load_prompt(prompt_name), video, sampling, mode=mode, speedups=speedups)


def set_attention(model: Any, impl: str) -> None:
    if getattr(model.config, "_attn_implementation", None) != impl:
        model.set_attn_implementation(impl)


def jobs_for(ctx: Context, sc: Scenario, wl: dict[str, Workload]) -> tuple[list[tuple[dict, Any]], list[int]]:
    if sc.workload == "mixed":
        names = [("2k", "7.8k")[i % 2] for i in range(sc.videos)] if "7.8k" in ctx.videos else None
        names = names or [("demo", "2k")[i % 2] for i in range(sc.videos)]
    else:
        names = [sc.workload] * sc.videos
    jobs = [({"video_url": f"/clips/{sc.workload}-{i}.mp4"}, ctx.videos[n]) for i, n in enumerate(names)]
    return jobs, [ctx.tokens[n] for n in names]


def run_row(ctx: Context, sc: Scenario, wl: dict[str, Workload], breakdown: bool = True) -> dict[str, Any]:
    """One row; ``breakdown`` adds one batch with device-synchronised phase timers (the shares)."""
    from recipe_lib.inference.requests import describe_plan, plan_batches

    mode, prompt_name, default_new = MODES[sc.mode]
    settings = wl[sc.workload].video if sc.workload in wl else wl["2k"].video
    scorer = make_scorer(ctx, sc, settings)
    jobs, counts = jobs_for(ctx, sc, wl)
    if sc.order == "mixed-planned":
        batches = plan_batches(counts, sc.batch)
    else:
        batches = [list(range(i, min(i + sc.batch, len(jobs)))) for i in range(0, len(jobs), sc.batch)]
    plan = describe_plan(batches, counts)
    try:
        for _ in range(sc.warmup_batches):
            warm = [jobs[i] for i in batches[0]]
            run_pipeline(scorer, warm, [list(range(len(warm)))], ctx.workers)
        _sync(ctx.device)
        _reset_peak(ctx.device)
        generated_before = scorer.tokens_generated
        stats: dict[str, float] = {}
        start = time.perf_counter()
        rows = run_pipeline(scorer, jobs, batches, ctx.workers, stats)
        _sync(ctx.device)
        wall = time.perf_counter() - start
        generated = scorer.tokens_generated - generated_before
        peak = _peak_memory(ctx.device)
        # One more batch with device-synchronised phase timers, for the breakdown.
        timing: dict[str, float] = {}
        if breakdown:
            scorer.profile = True
            first = [jobs[i] for i in batches[0]]
            run_pipeline(scorer, first, [list(range(len(first)))], 1)
            timing = dict(scorer.last_timing)
    finally:
        if getattr(scorer, "_decoder", None) is not None:
            scorer._decoder.release()
        del scorer
        gc.collect()
        if ctx.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
    n = len(rows)
    per = len(batches[0])
    names = sorted({sc.workload} if sc.workload != "mixed" else {"2k", "7.8k"} & set(ctx.tokens) or {"demo", "2k"})
    pre = statistics.mean(ctx.preprocess[w] for w in names)
    dec = [ctx.decode[w].get("video_decode_s") for w in names]
    phases = {
        "video_decode_s": statistics.mean(dec) if all(d is not None for d in dec) else None,
        "preprocess_s": pre,
        "collate_s": timing.get("collate_s", 0.0) / per,
        "vision_s": timing.get("vision_s", 0.0) / per,
        "lm_prefill_s": timing.get("prefill_s", 0.0) / per,
        "lm_decode_s": timing.get("decode_s", 0.0) / per,
    }
    total = sum(v for v in phases.values() if v is not None)
    shares = {k.removesuffix("_s"): (v / total if v is not None and total else None) for k, v in phases.items()}
    seq = statistics.mean(ctx.seq_len[(w, prompt_name if mode == "generate" else "expected")] for w in names)
    return {
        "key": sc.key,
        "workload": sc.workload,
        "order": sc.order,
        "visual_tokens": statistics.mean(counts),
        "seq_len": seq,
        "mode": sc.mode,
        "new_tokens": (sc.new_tokens or default_new) if mode == "generate" else 0,
        "batch": sc.batch,
        "variant": sc.variant,
        "videos": n,
        "seconds": wall,
        "videos_per_s": n / wall,
        "score_batch_videos_per_s": n / stats["score_batch_s"] if stats["score_batch_s"] else None,
        "wait_for_prepare_s": stats["wait_s"],
        "prompt_tokens_per_s": n * seq / wall,
        "generated_tokens_per_s": generated / wall if mode == "generate" else None,
        "generated_tokens": generated,
        "per_video_s": phases,
        "shares": shares,
        "peak_memory_gb": peak,
        "padding_share": plan.padding_share,
        "unparsed": sum(1 for r in rows if r.get("score") is None),
    }


# --------------------------------------------------------------------------------------------------------------------
# profiles


def profile_case(ctx: Context, sc: Scenario, wl: dict[str, Workload], rows: int = 15) -> dict[str, Any]:
    """torch.profiler summary of one batch: host versus device time, kernel launches and the top operators."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    scorer = make_scorer(ctx, sc, wl[sc.workload].video)
    jobs, _ = jobs_for(ctx, sc, wl)
    batch = [scorer.prepare_video(*jobs[i]) for i in range(sc.batch)]
    scorer.score_batch(batch)  # warm (and capture a graph where one is used)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.device.startswith("cuda") else [])
    _sync(ctx.device)
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        scorer.score_batch(batch)
        _sync(ctx.device)
    wall = time.perf_counter() - start
    events = prof.key_averages()
    device_attr = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"
    # Device time of the kernels themselves (operator rows would count the same kernels a second time).
    device_us = sum(getattr(e, device_attr, 0) for e in events if str(getattr(e, "device_type", "")).endswith("CUDA"))
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
    graphs = sum(e.count for e in events if e.key == "cudaGraphLaunch")
    sort = "self_cuda_time_total" if ctx.device.startswith("cuda") else "self_cpu_time_total"
    if getattr(scorer, "_decoder", None) is not None:
        scorer._decoder.release()
    del scorer
    gc.collect()
    if ctx.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {
        "key": sc.key,
        "wall_s": wall,
        "device_busy_s": device_us / 1e6,
        "device_busy_share": device_us / 1e6 / wall if wall else None,
        "kernel_launches": launches,
        "graph_launches": graphs,
        "table": events.table(sort_by=sort, row_limit=rows, max_name_column_width=60),
    }


# --------------------------------------------------------------------------------------------------------------------
# correctness on the benchmarked model


def correctness_checks(ctx: Context, wl: dict[str, Workload], name: str, new_tokens: int = 16) -> dict[str, Any]:
    """The fast paths against the stock ones on this model and device.

    ``vision_rel_error``: vision tower output, batched attention + padded MLP versus stock. ``probs_max_abs_diff``:
    p(1..5) of every speed-up versus stock. ``step_logits_rel_error``: the first decode step's logits through the
    static cache (prefix reused) versus a full forward on prompt + first token. Greedy tokens: graph replay versus the
    same decoder without a graph (same kernels), and transformers' generate versus the decoder (random weights give
    nearly flat logits, so rounding differences can change a greedy token; the logits check is the one that matters).
    """
    import torch

    from recipe_lib.inference.accel import (
        PrefixReuse,
        SamplerSettings,
        StaticDecoder,
        batched_vision_attention,
        padded_vision_mlp,
    )

    model = ctx.critic.model
    scorer = make_scorer(ctx, Scenario(name, "expected", 2, "stock", 2), wl[name].video)
    preps = [scorer.prepare_video({"video_url": f"/clips/check-{i}.mp4"}, ctx.videos[name]) for i in range(2)]
    out: dict[str, Any] = {"workload": name}
    with torch.inference_mode():
        inputs = scorer._inputs(preps)
        pixels = inputs["pixel_values_videos"].to(model.model.visual.dtype)
        grid = inputs["video_grid_thw"]
        with batched_vision_attention(model, False), padded_vision_mlp(model, False):
            ref = model.model.visual(pixels, grid_thw=grid).float()
        with batched_vision_attention(model, True), padded_vision_mlp(model, True):
            fast = model.model.visual(pixels, grid_thw=grid).float()
        out["vision_rel_error"] = float((fast - ref).norm() / ref.norm())
        # Rounding noise of the stock path itself: the same clip alone versus in a batch of two (other GEMM shapes).
        half = ref.shape[0] // 2
        with batched_vision_attention(model, False), padded_vision_mlp(model, False):
            alone = model.model.visual(pixels[: pixels.shape[0] // 2], grid_thw=grid[:1]).float()
        out["vision_stock_batch_noise"] = float((alone - ref[:half]).norm() / ref[:half].norm())
        stock_rows = scorer.score_batch(preps)
        fast_scorer = make_scorer(ctx, Scenario(name, "expected", 2, "fast", 2), wl[name].video)
        fast_rows = fast_scorer.score_batch([fast_scorer.prepare_video(p.item, p.video) for p in preps])
        out["probs_max_abs_diff"] = max(
            abs(a - b) for r, f in zip(stock_rows, fast_rows) for a, b in zip(r["probs"], f["probs"])
        )
        gen = make_scorer(ctx, Scenario(name, "generate", 2, "fast", 2), wl[name].video)
        gen.sampling = dataclasses.replace(gen.sampling, temperature=0.0, repetition_penalty=1.0)
        gen_preps = [gen.prepare_video({"video_url": f"/clips/check-{i}.mp4"}, ctx.videos[name]) for i in range(2)]
        gen.sampling = dataclasses.replace(gen.sampling, max_new_tokens=new_tokens)
        inputs = gen._inputs(gen_preps)
        pad, eos = ctx.critic.processor.tokenizer.pad_token_id, gen._eos_ids()
        with batched_vision_attention(model, True), padded_vision_mlp(model, True):
            hf_tokens = gen._hf_generate(inputs)
            first = hf_tokens[:, 0]
            decoder = StaticDecoder(model, pad, eos, use_graph=False, prefix=PrefixReuse(model))
            step = decoder.step_logits(inputs, first)
            full = (
                model(
                    **{k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")},
                    input_ids=torch.cat([inputs["input_ids"], first[:, None]], dim=1),
                    attention_mask=torch.cat([inputs["attention_mask"], torch.ones_like(first[:, None])], dim=1),
                    use_cache=False,
                    logits_to_keep=1,
                )
                .logits[:, -1]
                .float()
            )
            out["step_logits_rel_error"] = float((step - full).norm() / full.norm())
            out["step_argmax_equal"] = bool((step.argmax(-1) == full.argmax(-1)).all())
            tokens = {}
            for kind in ["static"] + (["graph"] if ctx.device.startswith("cuda") else []):
                decoder = StaticDecoder(model, pad, eos, use_graph=kind == "graph", prefix=PrefixReuse(model))
                tokens[kind] = decoder.generate(inputs, SamplerSettings(), new_tokens).tokens
                decoder.release()
            width = min(tokens["static"].shape[1], hf_tokens.shape[1])
            agree = (tokens["static"][:, :width] == hf_tokens[:, :width]).float().mean()
            out["greedy_static_vs_hf_token_agreement"] = float(agree)
            if "graph" in tokens:
                out["greedy_graph_vs_static_token_agreement"] = float(
                    (tokens["graph"] == tokens["static"]).float().mean()
                )
    return out


# --------------------------------------------------------------------------------------------------------------------
# driver


@dataclasses.dataclass
class BenchConfig:
    out: Path
    device: str = "auto"
    dtype: str = "auto"
    model: str | None = None
    arch: str | None = None
    random_weights: bool = False
    quick: bool = False
    time_limit_s: float | None = None
    only: list[str] | None = None
    profile: bool = False
    workers: int | None = None


def load_model(cfg: BenchConfig) -> tuple[Any, dict[str, Any]]:
    from recipe_lib.models.loading import load_critic
    from recipe_lib.models.tiny import ensure_demo_critic

    if cfg.arch:
        if not cfg.random_weights:
            raise RecipeError("--arch builds the architecture with random weights", hint="add --random-weights")
        from recipe_lib.models.arch import build_random_critic, count_parameters

        critic = build_random_critic(cfg.arch, device=cfg.device, dtype=cfg.dtype)
        info = {"model": critic.name, "parameters": count_parameters(cfg.arch), "weights": "random"}
    else:
        path = cfg.model or str(ensure_demo_critic())
        critic = load_critic(path, device=cfg.device, dtype=cfg.dtype)
        info = {"model": critic.name, "parameters": sum(p.numel() for p in critic.model.parameters())}
        info["weights"] = "demo critic (random, tiny)" if cfg.model is None else "checkpoint"
    info.update(dtype=critic.dtype, attn_implementation=critic.model.config._attn_implementation)
    return critic, info


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def run_benchmark(cfg: BenchConfig) -> dict[str, Any]:
    import torch

    from recipe_lib.config import build_dir
    from recipe_lib.inference.requests import clip_text, encode_clip
    from recipe_lib.prompts import load_prompt

    started = time.perf_counter()
    critic, model_info = load_model(cfg)
    device = critic.device
    on_gpu = device.startswith("cuda")
    wl = workloads()
    names = ["2k", "7.8k"] if on_gpu else (["demo", "2k"] if cfg.quick else ["demo", "2k", "7.8k"])
    plan = gpu_plan() if on_gpu else cpu_plan(cfg.quick)
    if cfg.only:
        plan = [sc for sc in plan if any(o in sc.key for o in cfg.only)]
    if cfg.quick:
        for sc in plan:  # the model is warm after the first rows; the breakdown batch runs after timing anyway
            sc.warmup_batches = 0
    workers = cfg.workers or max(1, min(8, (os.cpu_count() or 2) - 1))
    videos = {n: synthetic_video(wl[n]) for n in names}
    tokens = {n: wl[n].visual_tokens() for n in names}
    cache = build_dir() / "bench"
    decode = {n: measure_video_decode(wl[n], cache, reps=1 if cfg.quick else 3) for n in names}
    from recipe_lib.inference.hf import HFScorer

    probe = HFScorer(critic, load_prompt("video_reward"), wl[names[0]].video, SamplingSettings(), mode="expected")
    preprocess = {}
    seq_len: dict[tuple[str, str], int] = {}
    for n in names:
        probe.video_settings = wl[n].video
        preprocess[n] = measure_preprocess(probe, videos[n], reps=1 if cfg.quick else 3)
        for key, prompt, mode in (
            ("expected", "video_reward", "expected"),
            ("video_reward", "video_reward", "generate"),
            ("video_reward_with_thinking", "video_reward_with_thinking", "generate"),
        ):
            text = clip_text(
                probe.processor, load_prompt(prompt), {"video_url": "/clips/x.mp4"}, wl[n].video, mode, False
            )
            seq_len[(n, key)] = int(encode_clip(probe.processor, text, videos[n])["input_ids"].shape[1])
    del probe
    ctx = Context(critic, device, workers, videos, tokens, preprocess, decode, seq_len)
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "environment": environment(device),
        "model": model_info,
        "config": {"quick": cfg.quick, "workers": workers, "time_limit_s": cfg.time_limit_s},
        "workloads": {
            n: {
                "visual_tokens": tokens[n],
                "frames_height_width": list(wl[n].sized()),
                "source": f"{wl[n].source_frames} frames at {wl[n].source_fps:g} fps, {wl[n].width}x{wl[n].height}",
                "video_settings": dataclasses.asdict(wl[n].video),
                "preprocess_s": preprocess[n],
                **decode[n],
            }
            for n in names
        },
        "rows": [],
        "errors": [],
        "skipped_for_time": [],
        "profiles": [],
    }
    try:
        result["checks"] = correctness_checks(ctx, wl, names[0] if not on_gpu else "2k")
        print("checks:", json.dumps(result["checks"]), flush=True)
    except Exception as exc:
        result["errors"].append({"key": "checks", "error": f"{type(exc).__name__}: {exc}"})
        print(f"ERROR checks: {type(exc).__name__}: {exc}", flush=True)
    _write(cfg.out, result)
    for sc in plan:
        if cfg.time_limit_s is not None and time.perf_counter() - started > cfg.time_limit_s:
            result["skipped_for_time"].append(sc.key)
            continue
        t0 = time.perf_counter()
        try:
            row = run_row(ctx, sc, wl)
            row["row_wall_s"] = time.perf_counter() - t0
            result["rows"].append(row)
            print(_line(row), flush=True)
        except Exception as exc:  # a failed row is recorded, the others still run
            if on_gpu and isinstance(exc, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
            result["errors"].append({"key": sc.key, "error": f"{type(exc).__name__}: {exc}"})
            print(f"ERROR {sc.key}: {type(exc).__name__}: {exc}", flush=True)
        add_ratios(result)
        _write(cfg.out, result)
    if cfg.profile:
        cases = [Scenario("2k", "expected", 1, "stock", 1), Scenario("2k", "expected", 1, "fast", 1)]
        batch = 8 if on_gpu else 2
        fast = "graph" if on_gpu else "static"
        cases += [Scenario("2k", "generate", batch, "stock", batch), Scenario("2k", "generate", batch, fast, batch)]
        for sc in cases:
            if cfg.time_limit_s is not None and time.perf_counter() - started > cfg.time_limit_s * 1.1:
                result["skipped_for_time"].append("profile:" + sc.key)
                continue
            try:
                result["profiles"].append(profile_case(ctx, sc, wl))
            except Exception as exc:
                result["errors"].append({"key": "profile:" + sc.key, "error": f"{type(exc).__name__}: {exc}"})
            _write(cfg.out, result)
    result["total_s"] = time.perf_counter() - started
    add_ratios(result)
    _write(cfg.out, result)
    return result


def add_ratios(result: dict[str, Any]) -> None:
    """``vs_naive``: videos/s over the naive per-video generate baseline of the same workload in the same run."""
    naive = {r["workload"]: r["videos_per_s"] for r in result["rows"] if r["variant"] == "naive"}
    for r in result["rows"]:
        base = naive.get(r["workload"])
        if r["workload"] == "mixed" and naive:
            base = statistics.mean(naive.values())
        r["vs_naive"] = r["videos_per_s"] / base if base else None


# --------------------------------------------------------------------------------------------------------------------
# output


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _line(r: dict[str, Any]) -> str:
    gen = r["generated_tokens_per_s"]
    return (
        f"{r['key']:<44} {r['videos_per_s']:8.3f} videos/s  prompt {r['prompt_tokens_per_s']:9.0f} tok/s"
        f"  gen {'–' if gen is None else f'{gen:7.0f}'} tok/s  peak {r['peak_memory_gb']:.1f} GiB"
    )


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    params = result["model"]["parameters"]
    size = f"{params / 1e9:.2f} B" if params >= 1e8 else f"{params / 1e6:.2f} M"
    head = (
        f"Device: **{env.get('device_name')}** · torch {env['torch']} · transformers {env['transformers']} · "
        f"model {result['model']['model']} ({size} parameters, "
        f"{result['model']['dtype']}) · {env['date']}\n\n"
    )
    cols = (
        "| workload | visual tok | seq | mode | new tok | batch | variant | videos/s | × naive | prompt tok/s | "
        "gen tok/s | video decode | preprocess | vision | LM prefill | LM decode | peak GiB |"
    )
    lines = [head + cols, "|" + "---|" * 17]
    for r in result["rows"]:
        s = r["shares"]
        gen = r["generated_tokens_per_s"]
        ratio = r.get("vs_naive")
        wl = r["workload"] if r["order"] == "uniform" else f"{r['workload']} ({r['order'].split('-')[1]})"
        lines.append(
            f"| {wl} | {r['visual_tokens']:.0f} | {r['seq_len']:.0f} | {r['mode']} | {r['new_tokens']} | "
            f"{r['batch']} | {r['variant']} | {r['videos_per_s']:.2f} | "
            f"{'–' if ratio is None else f'{ratio:.2f}'} | {r['prompt_tokens_per_s']:.0f} | "
            f"{'–' if gen is None else f'{gen:.0f}'} | {_pct(s['video_decode'])} | {_pct(s['preprocess'])} | "
            f"{_pct(s['vision'])} | "
            f"{_pct(s['lm_prefill'])} | {_pct(s['lm_decode'])} | {r['peak_memory_gb']:.1f} |"
        )
    for e in result["errors"]:
        lines.append(f"\nError in {e['key']}: {e['error']}")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", help="critic folder or hub id (default: the demo critic)")
    p.add_argument("--arch", help="build this architecture from its config (with --random-weights): qwen2.5-vl-7b")
    p.add_argument("--random-weights", action="store_true", help="random weights for --arch (no download)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="auto", help="auto (bfloat16 on GPU, float32 on CPU) | float32 | bfloat16")
    p.add_argument("--quick", action="store_true", help="the short CPU form (< 2 minutes)")
    p.add_argument("--out", type=Path, help="result JSON (default: build/bench/scoring-<device>.json)")
    p.add_argument("--time-limit", type=float, help="start no new row after this many seconds")
    p.add_argument("--only", nargs="*", help="run only rows whose key contains one of these strings")
    p.add_argument("--profile", action="store_true", help="add torch.profiler summaries of key cases")
    p.add_argument("--workers", type=int, help="preparation threads (default: min(8, cores - 1))")
    p.add_argument("--render", type=Path, help="print the Markdown table of an existing result file and exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        print(markdown(json.loads(args.render.read_text())))
        return 0
    from recipe_lib.config import build_dir

    out = args.out or build_dir() / "bench" / f"scoring-{'quick' if args.quick else args.device.replace(':', '')}.json"
    cfg = BenchConfig(
        out=out,
        device=args.device,
        dtype=args.dtype,
        model=args.model,
        arch=args.arch,
        random_weights=args.random_weights,
        quick=args.quick,
        time_limit_s=args.time_limit,
        only=args.only,
        profile=args.profile,
        workers=args.workers,
    )
    try:
        result = run_benchmark(cfg)
    except RecipeError as exc:
        print(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return 2
    print(markdown(result))
    print(f"results: {out}")
    return 0 if not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
