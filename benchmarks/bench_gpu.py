"""One GPU benchmark run: plain vLLM, the project's vLLM backend, the transformers backend in bf16 (each vision-tower
variant on its own) and in float8, and the agreement figures, on one card in one process tree, in about 8 minutes.

    python benchmarks/bench_gpu.py --out "$OUT"            # GPU (H100/H200): the Qwen2.5-VL-7B shape, seeded weights
    python benchmarks/bench_gpu.py --cpu --out build/gpu-dry   # the dry run: the demo critic on CPU, < 2 minutes

Steps (each timed, each failure recorded in the JSON and the run goes on; rows past ``--time-limit`` are skipped):

1. weights: the Qwen2.5-VL-7B architecture with seeded random weights saved once (``plausibility tiny-model --arch
   qwen2.5-vl-7b --seed 0``) to ``--work``, so vLLM and transformers score with the SAME weights;
2. vLLM (a child process, ONE engine start, timed on its own): the agreement clips, then plain ``LLM.generate`` rows
   (batch 64) each beside the project's ``recipe_lib.inference.vllm.VLLMScorer`` on the same engine and workload
   (expected @2k, expected @7.6k), then plain thinking-512 @2k;
3. transformers bf16: the vision tower in ms per 2k clip for every variant (stock, grouped attention, + padded MLP,
   packed attention, fused blocks, fused + torch.compile), each with its max relative error against the stock tower;
   expected @2k bs16 (compiled); the agreement clips; p(1..5) of each scoring variant against the stock path; then,
   within half of the time left, @7.6k bs8 (compiled), thinking-512 @2k bs64 and the previous best (``fast``);
4. transformers fp8 (the linear layers converted by torchao, irreversible, so after bf16): the agreement clips,
   expected @2k compiled first, then @2k, @7.6k and thinking-512 with the fused tower, and the tower variants;
5. agreement (max |Δp(1..5)|, argmax agreement, max |Δ expected score|): transformers bf16 vs vLLM bf16 and
   transformers fp8 vs transformers bf16, and the rule that says whether fp8 may be recommended;
6. the targets of the speed issue, each met or missed, beside the measured figure.

Writes ``OUT/bench-gpu.json`` (all figures, environment, card and date) and ``OUT/bench-gpu.log`` (the short log);
the vLLM child's own output is trimmed to ``OUT/vllm-part.tail.log``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for entry in (str(REPO), str(REPO / "benchmarks")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")

from agreement import compare  # noqa: E402
from bench_scoring import (  # noqa: E402
    MODES,
    VARIANTS,
    Context,
    Scenario,
    run_row,
    set_attention,
    synthetic_video,
    workloads,
)

from recipe_lib.config import SamplingSettings  # noqa: E402
from recipe_lib.errors import RecipeError  # noqa: E402

SCHEMA = "plausibility-bench-gpu/1"
THINK_TOKENS = 512

# Targets of the speed issue (videos/s); thinking differs by card.
TARGETS = {
    "expected@2k bf16": 12.0,
    "expected@2k fp8": 16.0,
    "expected@7.6k": 3.0,
    "thinking-512@2k (H100)": 5.0,
    "thinking-512@2k (H200)": 8.0,
    "vision tower ms per 2k clip": 20.0,
}

# Vision tower variants: (name, Speedups keyword arguments); each adds or swaps one switch.
TOWER_VARIANTS = [
    ("stock", {"batched_vision_attention": False}),
    ("grouped", {"batched_vision_attention": True}),
    ("grouped+mlp", {"batched_vision_attention": True, "padded_vision_mlp": True}),
    ("packed", {"batched_vision_attention": False, "packed_vision_attention": True}),
    ("fused", {"batched_vision_attention": False, "fused_vision_blocks": True}),
    ("fused+compiled", {"batched_vision_attention": False, "fused_vision_blocks": True, "compile_vision": True}),
]


@dataclasses.dataclass
class Plan:
    """Sizes of one run: the GPU run or the CPU dry run (same code paths, small numbers)."""

    device: str
    dtype: str
    short: str  # workload of the ~2 k-token rows
    long: str  # workload of the ~7.6 k-token rows
    vllm_batch: int
    vllm_long_clips: int
    tower_batch: int
    agree_clips: int
    rows: list[Scenario]
    fp8_rows: list[Scenario]
    fp8_compiled_rows: list[Scenario]
    think_tokens: int
    compile_backend: str
    time_limit_s: float
    vllm_budget_s: float

    @classmethod
    def gpu(cls, time_limit_s: float) -> Plan:
        s = Scenario
        return cls(
            device="cuda",
            dtype="bfloat16",
            short="2k",
            long="7.8k",
            vllm_batch=64,
            vllm_long_clips=32,
            tower_batch=16,
            agree_clips=16,
            rows=[
                s("2k", "expected", 16, "compiled", 48),
                s("2k", "expected", 16, "fused", 48),  # the CUDA default (--vision-path auto)
                s("7.8k", "expected", 8, "compiled", 16),
                s("2k", "thinking", 64, "fused-graph", 64),
                s("2k", "expected", 16, "fast", 48),  # the default before
            ],
            fp8_rows=[
                s("2k", "expected", 16, "fused", 48),
                s("7.8k", "expected", 8, "fused", 16),
                s("2k", "thinking", 64, "fused-graph", 64),
            ],
            fp8_compiled_rows=[s("2k", "expected", 16, "compiled", 48)],  # float8 pays once compiled
            think_tokens=THINK_TOKENS,
            compile_backend="inductor",
            time_limit_s=time_limit_s,
            vllm_budget_s=min(240.0, 0.5 * time_limit_s),
        )

    @classmethod
    def cpu(cls, time_limit_s: float) -> Plan:
        s = Scenario
        return cls(
            device="cpu",
            dtype="float32",
            short="demo",  # the demo critic's small clips: every code path of the 2k rows, in seconds
            long="demo",
            vllm_batch=2,
            vllm_long_clips=2,
            tower_batch=2,
            agree_clips=2,
            rows=[
                s("demo", "expected", 2, "compiled", 2, warmup_batches=0),
                s("demo", "expected", 2, "fast", 2, warmup_batches=0),
                s("demo", "thinking", 2, "fused", 2, warmup_batches=0, new_tokens=8),
            ],
            fp8_rows=[s("demo", "expected", 2, "fused", 2, warmup_batches=0)],
            fp8_compiled_rows=[s("demo", "expected", 2, "compiled", 2, warmup_batches=0)],
            think_tokens=8,
            compile_backend="aot_eager",  # traces the same graphs as inductor, without a C++ build on a CPU
            time_limit_s=time_limit_s,
            vllm_budget_s=60.0,
        )


class Log:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        line = f"[{time.perf_counter() - self.start:6.1f}s] {message}"
        print(line, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------------------------------
# clips (the same seeded frames in the vLLM child and in this process)


def agreement_clips(n: int, name: str = "2k") -> list[tuple[str, Any]]:
    wl = workloads()[name]
    return [(f"/clips/agree-{i}.mp4", synthetic_video(wl, seed=900_000 + i)) for i in range(n)]


def _text(processor: Any, prompt_name: str, mode: str, name: str) -> tuple[Any, str]:
    from recipe_lib.inference.requests import clip_text
    from recipe_lib.prompts import load_prompt

    prompt = load_prompt(prompt_name)
    return prompt, clip_text(processor, prompt, {"video_url": "synthetic"}, workloads()[name].video, mode, False)


# --------------------------------------------------------------------------------------------------------------------
# vLLM part (a child process: the engine's memory goes back when it exits)


def vllm_part(model: str, out: Path, plan: Plan) -> dict[str, Any]:
    """Plain ``LLM.generate`` rows and the project's VLLMScorer rows on ONE engine, then the agreement clips."""
    from recipe_lib.inference.hf import Prepared
    from recipe_lib.inference.score_config import ScoreConfig, VLLMOptions
    from recipe_lib.inference.vllm import VLLMScorer

    started = time.perf_counter()
    result: dict[str, Any] = {"rows": [], "errors": [], "skipped_for_time": []}
    wl = workloads()
    opts = VLLMOptions(gpu_memory_utilization=0.85, max_model_len=16384)

    def scorer_for(name: str, mode_name: str) -> VLLMScorer:
        mode, prompt_name, new_tokens = MODES[mode_name]
        tokens = plan.think_tokens if mode_name == "thinking" else max(new_tokens, 1)
        sampling = SamplingSettings(max_new_tokens=tokens, trials=1, temperature=0.6)
        cfg = ScoreConfig(
            inputs=[], out_dir=Path("unused"), model=model, mode=mode, video=wl[name].video, sampling=sampling,
            dtype=plan.dtype, backend="vllm", vllm=opts,
        )  # fmt: skip
        from recipe_lib.prompts import load_prompt

        extra = {"ignore_eos": True} if mode == "generate" else {}
        return VLLMScorer(cfg, load_prompt(prompt_name), sampling_kwargs=extra)

    first = scorer_for(plan.short, "expected")
    result["engine_args"] = {k: v for k, v in first.engine_args().items() if k != "model"}
    try:
        import vllm
    except ImportError as exc:
        result["skipped"] = f"vllm is not installed here ({exc}); request building was checked"
        for name, mode_name in ((plan.short, "expected"), (plan.long, "expected"), (plan.short, "thinking")):
            scorer = scorer_for(name, mode_name)
            _, text = _text(scorer.processor, MODES[mode_name][1], MODES[mode_name][0], name)
            video = synthetic_video(wl[name], seed=1)
            request = scorer.requests([Prepared({"video_url": "x"}, text, video, 0.0)])[0]
            assert request["multi_modal_data"]["video"].shape[-1] == 3
            _plain_params(scorer, mode_name, plan)  # the keyword arguments (no vllm to build them)
        _write(out, result)
        return result

    t0 = time.perf_counter()
    try:
        llm = first._engine()
    except Exception as exc:
        result["errors"].append({"key": "engine start", "error": _error(exc)})
        traceback.print_exc()
        _write(out, result)
        return result
    result["engine_start_s"] = round(time.perf_counter() - t0, 1)
    result["vllm"] = vllm.__version__
    # The agreement clips first: short, and what the fp8 rule needs.
    try:
        scorer = scorer_for(plan.short, "expected")
        scorer._llm = llm
        _, text = _text(scorer.processor, "video_reward", "expected", plan.short)
        clips = agreement_clips(plan.agree_clips, plan.short)
        prepared = [Prepared({"video_url": v}, text, clip, 0.0) for v, clip in clips]
        rows = scorer.score_batch(prepared)
        result["agreement_rows"] = [{**r, "video": p.item["video_url"]} for p, r in zip(prepared, rows)]
    except Exception as exc:
        result["errors"].append({"key": "agreement", "error": _error(exc)})
        traceback.print_exc()
    _write(out, result)

    # (workload, mode, clips, kind): each plain LLM.generate row next to the project's VLLMScorer on the same
    # workload, so a budget that runs out still leaves pairs to compare; thinking (plain only) last
    cases = [
        (plan.short, "expected", plan.vllm_batch, "plain"),
        (plan.short, "expected", plan.vllm_batch, "ours"),
        (plan.long, "expected", plan.vllm_long_clips, "plain"),
        (plan.long, "expected", plan.vllm_long_clips, "ours"),
        (plan.short, "thinking", plan.vllm_batch, "plain"),
    ]
    for index, (name, mode_name, clips, kind) in enumerate(cases):
        scorer = scorer_for(name, mode_name)
        scorer._llm = llm
        _, text = _text(scorer.processor, MODES[mode_name][1], MODES[mode_name][0], name)
        key = f"vllm-{kind}/{name}/{mode_name}" + (f"-{plan.think_tokens}" if mode_name == "thinking" else "")
        if time.perf_counter() - started > plan.vllm_budget_s:
            result["skipped_for_time"].append(key)
            continue
        base = 100_000 * (index + 1)
        warm = [synthetic_video(wl[name], seed=base + 50_000 + i) for i in range(min(4, clips))]
        videos = [synthetic_video(wl[name], seed=base + i) for i in range(clips)]
        try:
            run = _plain_run if kind == "plain" else _ours_run
            run(llm, scorer, text, warm, plan, mode_name)  # warm-up: this row's shapes
            t1 = time.perf_counter()
            scored = run(llm, scorer, text, videos, plan, mode_name)
            elapsed = time.perf_counter() - t1
            row = {
                "key": key,
                "backend": f"vllm-{kind}",
                "workload": name,
                "mode": mode_name,
                "visual_tokens": wl[name].visual_tokens(),
                "batch": clips,
                "videos": clips,
                "seconds": round(elapsed, 3),
                "videos_per_s": round(clips / elapsed, 3),
                "answered": scored,
            }
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
        except Exception as exc:  # a failed row is recorded, the others still run
            result["errors"].append({"key": key, "error": _error(exc)})
            traceback.print_exc()
        _write(out, result)
    result["seconds"] = round(time.perf_counter() - started, 1)
    _write(out, result)
    return result


def _plain_params(scorer: Any, mode_name: str, plan: Plan) -> dict[str, Any]:
    """What a plain vLLM user passes: one greedy token with the top-20 log-probabilities, or 512 sampled tokens."""
    if mode_name == "expected":
        return {"max_tokens": 1, "temperature": 0.0, "logprobs": 20}
    return {"max_tokens": plan.think_tokens, "temperature": 0.6, "top_p": 0.95, "top_k": 50, "ignore_eos": True}


def _plain_run(llm: Any, scorer: Any, text: str, videos: list[Any], plan: Plan, mode_name: str) -> int:
    import vllm

    from recipe_lib.inference.requests import vllm_input

    requests = [vllm_input(text, v, scorer.family) for v in videos]
    outputs = llm.generate(requests, vllm.SamplingParams(**_plain_params(scorer, mode_name, plan)), use_tqdm=False)
    return sum(1 for o in outputs if o.outputs and o.outputs[0].token_ids)


def _ours_run(llm: Any, scorer: Any, text: str, videos: list[Any], plan: Plan, mode_name: str) -> int:
    from recipe_lib.inference.hf import Prepared

    prepared = [Prepared({"video_url": f"clip-{i}"}, text, v, 0.0) for i, v in enumerate(videos)]
    rows = scorer.score_batch(prepared)
    if mode_name == "expected":
        return sum(1 for r in rows if r.get("probs"))
    return sum(1 for r in rows if r.get("raw_output"))


# --------------------------------------------------------------------------------------------------------------------
# transformers part


def tower_inputs(critic: Any, plan: Plan) -> tuple[Any, Any]:
    """Pixels and grid of ``plan.tower_batch`` 2k clips, as the scorer hands them to the vision tower."""
    from recipe_lib.inference.hf import HFScorer
    from recipe_lib.prompts import load_prompt

    wl = workloads()[plan.short]
    scorer = HFScorer(critic, load_prompt("video_reward"), wl.video, SamplingSettings(), mode="expected")
    prepared = [
        scorer.prepare_video({"video_url": f"/clips/tower-{i}.mp4"}, synthetic_video(wl, seed=700_000 + i))
        for i in range(plan.tower_batch)
    ]
    inputs = scorer._inputs(prepared)
    return inputs["pixel_values_videos"], inputs["video_grid_thw"]


def time_tower(critic: Any, pixels: Any, grid: Any, speed: dict[str, Any], plan: Plan, reps: int = 2) -> dict[str, Any]:
    """ms per clip of the vision tower under the variant's switches (after one untimed call, which compiles where
    the variant compiles) and its output."""
    import torch

    from recipe_lib.inference.accel import (
        Speedups,
        batched_vision_attention,
        fused_vision_blocks,
        packed_vision_attention,
        padded_vision_mlp,
    )

    sp = Speedups(**{**speed, "compile_backend": plan.compile_backend})
    model = critic.model
    visual = model.model.visual
    with (
        torch.inference_mode(),
        batched_vision_attention(model, sp.batched_vision_attention),
        padded_vision_mlp(model, sp.padded_vision_mlp),
        packed_vision_attention(model, sp.packed_vision_attention),
        fused_vision_blocks(model, sp.fused_vision_blocks, sp.vision_compile_backend),
    ):
        _sync(plan.device)
        t0 = time.perf_counter()
        out = visual(pixels, grid_thw=grid)
        _sync(plan.device)
        first = time.perf_counter() - t0
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            out = visual(pixels, grid_thw=grid)
            _sync(plan.device)
            times.append(time.perf_counter() - t0)
    clips = int(grid.shape[0])
    return {
        "ms_per_clip": round(1000 * statistics.median(times) / clips, 2),
        "first_call_s": round(first, 2),
        "clips": clips,
        "patches": int(pixels.shape[0]),
        "output": out.float(),
    }


def _relative(a: Any, b: Any) -> float:
    return float((a - b).abs().max() / b.abs().max())


def make_context(critic: Any, plan: Plan) -> Context:
    from recipe_lib.inference.hf import HFScorer
    from recipe_lib.inference.requests import encode_clip
    from recipe_lib.prompts import load_prompt

    wl = workloads()
    names = sorted({plan.short, plan.long})
    videos = {n: synthetic_video(wl[n]) for n in names}
    probe = HFScorer(critic, load_prompt("video_reward"), wl[plan.short].video, SamplingSettings(), mode="expected")
    seq_len: dict[tuple[str, str], int] = {}
    for n in names:
        for key, prompt_name, mode in (
            ("expected", "video_reward", "expected"),
            ("video_reward", "video_reward", "generate"),
            ("video_reward_with_thinking", "video_reward_with_thinking", "generate"),
        ):
            _, text = _text(probe.processor, prompt_name, mode, n)
            seq_len[(n, key)] = int(encode_clip(probe.processor, text, videos[n])["input_ids"].shape[1])
    workers = max(1, min(8, (os.cpu_count() or 2) - 1))
    return Context(
        critic,
        critic.device,
        workers,
        videos,
        {n: wl[n].visual_tokens() for n in names},
        dict.fromkeys(names, 0.0),
        {n: {"video_decode_s": None} for n in names},
        seq_len,
        compile_backend=plan.compile_backend,
    )


def hf_rows(ctx: Context, rows: list[Scenario], plan: Plan, deadline: float, precision: str, result: dict) -> None:
    wl = workloads()
    for sc in rows:
        if sc.mode == "thinking":
            sc.new_tokens = sc.new_tokens or plan.think_tokens
        key = f"hf-{precision}/{sc.key}"
        if time.perf_counter() > deadline:
            result["skipped_for_time"].append(key)
            continue
        t0 = time.perf_counter()
        try:
            row = run_row(ctx, sc, wl, breakdown=sc.mode == "expected")
            keep = ("workload", "mode", "new_tokens", "batch", "variant", "videos", "seconds", "videos_per_s",
                    "visual_tokens", "per_video_s", "peak_memory_gb", "unparsed")  # fmt: skip
            entry = {"key": key, "backend": "hf", "precision": precision, **{k: row[k] for k in keep}}
            entry["row_wall_s"] = round(time.perf_counter() - t0, 1)
            result["rows"].append(entry)
            result["log"](f"{key}: {row['videos_per_s']:.3f} videos/s ({entry['row_wall_s']} s with warm-up)")
        except Exception as exc:
            result["errors"].append({"key": key, "error": _error(exc)})
            result["log"](f"ERROR {key}: {_error(exc)}")
            traceback.print_exc()
        _free(plan.device)
        result["save"]()


def variant_checks(critic: Any, plan: Plan, clips: int) -> dict[str, Any]:
    """p(1..5) of each scoring variant against the stock path on the same clips and weights (max |dp|, argmax
    agreement), the check beside each variant's speed."""
    rows = {v: agreement_rows(critic, v, plan, clips) for v in ("stock", "fast", "packed", "fused", "compiled")}
    return {v: _summary(compare(r, rows["stock"])) for v, r in rows.items() if v != "stock"}


def agreement_rows(critic: Any, variant: str, plan: Plan, limit: int | None = None) -> list[dict[str, Any]]:
    from recipe_lib.inference.accel import Speedups
    from recipe_lib.inference.hf import HFScorer
    from recipe_lib.prompts import load_prompt

    speed, attn = VARIANTS[variant]
    set_attention(critic.model, attn)
    scorer = HFScorer(
        critic, load_prompt("video_reward"), workloads()[plan.short].video, SamplingSettings(), mode="expected",
        speedups=Speedups(**{**speed, "compile_backend": plan.compile_backend}),
    )  # fmt: skip
    rows = []
    clips = agreement_clips(limit or plan.agree_clips, plan.short)
    step = min(plan.tower_batch, len(clips))  # the tower's batch shape: a compiled variant reuses its graphs
    for i in range(0, len(clips), step):
        prepared = [scorer.prepare_video({"video_url": v}, c) for v, c in clips[i : i + step]]
        rows += [{**r, "video": p.item["video_url"]} for p, r in zip(prepared, scorer.score_batch(prepared))]
    return rows


def _summary(agreement: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in agreement.items() if k != "per_clip"}


def fp8_rule(fp8: dict[str, Any] | None, reference: dict[str, Any] | None) -> dict[str, Any]:
    """fp8 may be recommended only if it agrees with bf16 transformers at least as well as bf16 transformers and
    bf16 vLLM agree with each other, on all three figures."""
    rule = (
        "fp8 is recommended only if, against bf16 transformers on the same seeded weights and clips, its "
        "max |dp(1..5)| and max |d expected score| are at most, and its argmax agreement at least, those of "
        "bf16 transformers against bf16 vLLM"
    )
    if not fp8 or not reference or any(fp8.get(k) is None or reference.get(k) is None for k in _AGREE_KEYS):
        return {"rule": rule, "fp8_recommended": None, "why": "an agreement figure is missing (see errors)"}
    ok = (
        fp8["max_abs_dprob"] <= reference["max_abs_dprob"]
        and fp8["max_abs_dexpected"] <= reference["max_abs_dexpected"]
        and fp8["argmax_agreement"] >= reference["argmax_agreement"]
    )
    return {"rule": rule, "fp8_recommended": ok, "fp8_vs_bf16": fp8, "hf_vs_vllm_bf16": reference}


_AGREE_KEYS = ("max_abs_dprob", "argmax_agreement", "max_abs_dexpected")


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target beside the best measured figure (None when no row measured it)."""

    def best(precision: str, workload: str, mode: str) -> float | None:
        values = [
            r["videos_per_s"]
            for r in result["rows"]
            if r.get("precision") == precision and r["workload"] == workload and r["mode"] == mode
        ]
        return max(values, default=None)

    card = str(result["environment"].get("device_name", ""))
    fast_tower = [v["ms_per_clip"] for k, v in result["vision_tower"].items() if "ms_per_clip" in v]
    bf16_long = best("bf16", "7.8k", "expected")
    fp8_long = best("fp8", "7.8k", "expected")
    long_best = max([x for x in (bf16_long, fp8_long) if x is not None], default=None)
    think = max(
        [x for x in (best("bf16", "2k", "thinking"), best("fp8", "2k", "thinking")) if x is not None], default=None
    )
    measured = {
        "expected@2k bf16": best("bf16", "2k", "expected"),
        "expected@2k fp8": best("fp8", "2k", "expected"),
        "expected@7.6k": long_best,
        "thinking-512@2k (H100)": think if "H100" in card else None,
        "thinking-512@2k (H200)": think if "H200" in card else None,
        "vision tower ms per 2k clip": min(fast_tower, default=None) if result["plan"]["short"] == "2k" else None,
    }
    out = []
    for name, goal in TARGETS.items():
        value = measured[name]
        lower_is_better = name.startswith("vision")
        met = None if value is None else (value <= goal if lower_is_better else value >= goal)
        out.append({"target": name, "goal": goal, "measured": value, "met": met})
    return out


def hf_part(model: str, plan: Plan, deadline: float, result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Vision tower variants, scoring rows and agreement clips in bf16, then the same with float8 linear layers;
    most important first, rows skipped past the deadline (the short agreement steps always run)."""
    from recipe_lib.inference.accel import apply_float8
    from recipe_lib.models.loading import load_critic

    log = result["log"]
    t0 = time.perf_counter()
    critic = load_critic(model, device=plan.device, dtype=plan.dtype)
    result["hf_load_s"] = round(time.perf_counter() - t0, 1)
    log(f"transformers critic loaded in {result['hf_load_s']} s")
    set_attention(critic.model, "sdpa")
    pixels, grid = tower_inputs(critic, plan)
    tower = result["vision_tower"]
    reference: list[Any] = []

    def towers(precision: str, variants: list[tuple[str, dict[str, Any]]]) -> None:
        for name, speed in variants:
            key = f"{precision}/{name}"
            if time.perf_counter() > deadline:
                result["skipped_for_time"].append(f"vision tower {key}")
                continue
            try:
                timing = time_tower(critic, pixels, grid, speed, plan)
                out = timing.pop("output")
                if not reference:
                    reference.append(out)
                timing["max_rel_error_vs_stock_bf16"] = _relative(out, reference[0])
                tower[key] = timing
                log(f"vision tower {key}: {timing['ms_per_clip']} ms per clip, max rel error vs stock bf16 "
                    f"{timing['max_rel_error_vs_stock_bf16']:.2e} (first call {timing['first_call_s']} s)")  # fmt: skip
            except Exception as exc:
                tower[key] = {"error": _error(exc)}
                log(f"ERROR vision tower {key}: {_error(exc)}")
                traceback.print_exc()
            _free(plan.device)
            result["save"]()

    agree: dict[str, list[dict[str, Any]]] = {}

    def agreement(precision: str) -> None:
        try:
            agree[precision] = agreement_rows(critic, "fast", plan)
            log(f"agreement clips scored in {precision}")
        except Exception as exc:
            result["errors"].append({"key": f"agreement {precision}", "error": _error(exc)})
            log(f"ERROR agreement {precision}: {_error(exc)}")
            traceback.print_exc()

    towers("bf16", TOWER_VARIANTS)
    ctx = make_context(critic, plan)
    # bf16 gets about half of what is left, so that the float8 rows (irreversible conversion, after bf16) get theirs
    bf16_deadline = time.perf_counter() + 0.5 * max(0.0, deadline - time.perf_counter())
    hf_rows(ctx, plan.rows[:1], plan, deadline, "bf16", result)
    agreement("bf16")
    try:
        result["variant_checks"] = variant_checks(critic, plan, plan.tower_batch)
        log("p(1..5) of each variant vs stock: " + json.dumps(
            {v: c.get("max_abs_dprob") for v, c in result["variant_checks"].items()}))  # fmt: skip
    except Exception as exc:
        result["errors"].append({"key": "variant checks", "error": _error(exc)})
        log(f"ERROR variant checks: {_error(exc)}")
        traceback.print_exc()
    hf_rows(ctx, plan.rows[1:], plan, min(deadline, bf16_deadline), "bf16", result)
    label = "fp8"
    try:
        t0 = time.perf_counter()
        converted = apply_float8(critic.model)
        result["fp8"] = {"layers": converted, "convert_s": round(time.perf_counter() - t0, 1), "scaling": "rowwise"}
        log(f"float8: {converted} linear layers converted in {result['fp8']['convert_s']} s")
    except (RecipeError, ImportError) as exc:
        message = exc.message if isinstance(exc, RecipeError) else _error(exc)
        result["fp8"] = {"skipped": message}
        log(f"float8 skipped: {message}")
        if plan.device == "cuda":
            return agree
        # The CPU dry run goes through the fp8 steps' code unconverted (labelled so), to catch mistakes before a GPU.
        label = "fp8-unconverted"
        result["fp8"]["dry_run_unconverted"] = True
        log("dry run: the fp8 steps run unconverted (no float8 on a CPU)")
    agreement(label)
    hf_rows(ctx, plan.fp8_compiled_rows, plan, deadline, label, result)  # the row of the fp8 target first
    hf_rows(ctx, plan.fp8_rows, plan, deadline, label, result)
    towers(label, [v for v in TOWER_VARIANTS if v[0] in ("packed", "fused", "fused+compiled")])
    return agree


# --------------------------------------------------------------------------------------------------------------------
# driver


def environment(device: str) -> dict[str, Any]:
    import platform

    import torch
    import transformers

    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_count": os.cpu_count(),
    }
    for package in ("torchao", "vllm"):
        try:
            from importlib.metadata import version

            env[package] = version(package)
        except Exception:
            env[package] = None
    if device == "cuda" and torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name(0)
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        env["cuda"] = torch.version.cuda
    else:
        env["device_name"] = f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    return env


def prepare_weights(plan: Plan, work: Path, log: Log) -> tuple[str, float]:
    """The folder both backends load: the 7B shape with seeded weights (saved once), or the demo critic on CPU."""
    if plan.device != "cuda":
        from recipe_lib.models.tiny import ensure_demo_critic

        return str(ensure_demo_critic()), 0.0
    folder = work / "m7b"
    start = time.perf_counter()
    if not (folder / "model.safetensors.index.json").is_file():
        cmd = [sys.executable, "-m", "recipe_lib.cli", "tiny-model", "--arch", "qwen2.5-vl-7b", "--out", str(folder)]
        subprocess.run([*cmd, "--seed", "0", "--device", "cuda"], check=True, cwd=REPO, timeout=240)
    return str(folder), time.perf_counter() - start


def run_vllm_child(model: str, plan: Plan, work: Path, out_dir: Path, cpu: bool, log: Log) -> dict[str, Any]:
    part = work / "vllm-part.json"
    part.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", "vllm", "--model", model, "--out", str(part)]
    cmd += ["--time-limit", str(plan.time_limit_s)] + (["--cpu"] if cpu else [])
    full_log = work / "vllm-part.log"
    try:
        with full_log.open("w") as f:
            rc = subprocess.run(
                cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, timeout=plan.vllm_budget_s + 90
            ).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    lines = full_log.read_text(errors="replace").splitlines()
    keep = [ln for ln in lines if not ln.startswith(("INFO", "(EngineCore", "WARNING", "DEBUG"))]
    (out_dir / "vllm-part.tail.log").write_text("\n".join(keep[-80:]) + "\n")
    data = json.loads(part.read_text()) if part.is_file() else {"rows": [], "errors": []}
    data["returncode"] = rc
    log(f"vLLM part: rc {rc}, engine start {data.get('engine_start_s')} s, {len(data.get('rows', []))} rows")
    for row in data.get("rows", []):
        log(f"{row['key']}: {row['videos_per_s']:.3f} videos/s")
    return data


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    plan = Plan.cpu(args.time_limit or 300) if args.cpu else Plan.gpu(args.time_limit or 460)
    out_dir = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    log = Log(out_dir / "bench-gpu.log")
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "environment": environment(plan.device),
        "plan": {
            k: v for k, v in dataclasses.asdict(plan).items() if k not in ("rows", "fp8_rows", "fp8_compiled_rows")
        },
        "workloads": {
            n: {"visual_tokens": w.visual_tokens(), "frames_height_width": list(w.sized())}
            for n, w in workloads().items()
            if n in (plan.short, plan.long)
        },  # fmt: skip
        "rows": [],
        "vision_tower": {},
        "errors": [],
        "skipped_for_time": [],
    }
    out_json = out_dir / "bench-gpu.json"
    log(f"card: {result['environment']['device_name']}; time limit {plan.time_limit_s:.0f} s")
    try:
        model, weights_s = prepare_weights(plan, work, log)
    except Exception as exc:
        result["errors"].append({"key": "weights", "error": _error(exc)})
        log(f"ERROR weights: {_error(exc)}")
        _write(out_json, result)
        return result
    result["weights"] = {"model": model, "seconds": round(weights_s, 1), "seed": 0}
    log(f"weights ready in {weights_s:.0f} s: {model}")
    vllm_data = run_vllm_child(model, plan, work, out_dir, args.cpu, log)
    result["vllm"] = {k: v for k, v in vllm_data.items() if k not in ("rows", "agreement_rows")}
    result["rows"] += vllm_data.get("rows", [])
    result["skipped_for_time"] += vllm_data.get("skipped_for_time", [])
    _write(out_json, result)
    result["log"] = log
    result["save"] = lambda: _write(out_json, {k: v for k, v in result.items() if k not in ("log", "save")})
    deadline = started + plan.time_limit_s
    try:
        agree = hf_part(model, plan, deadline, result)
    except Exception as exc:
        agree = {}
        result["errors"].append({"key": "transformers", "error": _error(exc)})
        log(f"ERROR transformers part: {_error(exc)}")
        traceback.print_exc()
    del result["log"], result["save"]
    figures: dict[str, Any] = {}
    vllm_rows = vllm_data.get("agreement_rows")
    if agree.get("bf16") and vllm_rows:
        figures["hf_bf16_vs_vllm_bf16"] = compare(agree["bf16"], vllm_rows)
    for label in ("fp8", "fp8-unconverted"):  # the second only in the CPU dry run
        if agree.get("bf16") and agree.get(label):
            figures[f"hf_{label}_vs_hf_bf16"] = compare(agree[label], agree["bf16"])
    result["agreement"] = {k: _summary(v) for k, v in figures.items()}
    result["agreement_per_clip"] = {k: v["per_clip"] for k, v in figures.items()}
    result["fp8_rule"] = fp8_rule(
        result["agreement"].get("hf_fp8_vs_hf_bf16"), result["agreement"].get("hf_bf16_vs_vllm_bf16")
    )
    result["targets"] = targets(result)
    result["total_s"] = round(time.perf_counter() - started, 1)
    _write(out_json, result)
    for name, figure in result["agreement"].items():
        log(f"agreement {name}: " + json.dumps({k: figure.get(k) for k in _AGREE_KEYS}))
    log(f"fp8 recommended: {result['fp8_rule']['fp8_recommended']}")
    for t in result["targets"]:
        log(f"target {t['target']}: goal {t['goal']}, measured {t['measured']}, met {t['met']}")
    log(f"done in {result['total_s']} s; {len(result['errors'])} errors; results: {out_json}")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "build/gpu-bench")))
    p.add_argument("--work", type=Path, default=Path("/tmp/bench-gpu"), help="weights and the vLLM child's files")
    p.add_argument("--cpu", action="store_true", help="dry run on CPU with the demo critic (every code path, < 2 min)")
    p.add_argument("--time-limit", type=float, help="seconds for the whole run (GPU default 460, CPU 300)")
    p.add_argument("--part", choices=["vllm"], help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.part == "vllm":
        plan = Plan.cpu(args.time_limit or 300) if args.cpu else Plan.gpu(args.time_limit or 460)
        vllm_part(args.model, args.out, plan)
        return 0
    try:
        result = run(args)
    except RecipeError as exc:
        print(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return 2
    return 0 if not result["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
