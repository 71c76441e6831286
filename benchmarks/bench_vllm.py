"""vLLM scoring throughput through the project's own vLLM backend (:class:`recipe_lib.inference.vllm.VLLMScorer`).

    python benchmarks/bench_vllm.py --model DIR [--dummy] --out vllm.json [--batch 64] [--only 2k/expected ...]
        [--time-limit S]

``DIR`` is a checkpoint folder; with ``--dummy`` only its ``config.json`` is read and vLLM builds random weights
(``load_format="dummy"``: ``plausibility tiny-model --arch qwen2.5-vl-7b --config-only --out DIR``). Rows use the same
workloads and synthetic frames as ``bench_scoring.py`` (≈ 2 k and ≈ 7.8 k visual tokens), so the two files' rows sit
side by side; generate rows produce exactly their token count (``ignore_eos``) as the transformers rows do. One engine
serves every row (prefix caching on); its start-up time is reported on its own. Each row warms up on 4 clips of its
own (not a whole batch) and times ``--repeats`` batches; a row that would start after ``--time-limit`` seconds is
listed as skipped, so a row that fits is never cut by an outer timeout. ``benchmarks/bench_gpu.py`` runs the rows
that matter in one GPU call (plain ``LLM.generate`` beside this backend).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_scoring import MODES, synthetic_video, workloads  # noqa: E402

from recipe_lib.config import SamplingSettings  # noqa: E402
from recipe_lib.inference.hf import Prepared  # noqa: E402
from recipe_lib.inference.requests import clip_text  # noqa: E402
from recipe_lib.inference.score_config import ScoreConfig, VLLMOptions  # noqa: E402
from recipe_lib.prompts import load_prompt  # noqa: E402

ROWS = ("2k/expected", "7.8k/expected", "2k/generate", "2k/thinking", "7.8k/generate")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from recipe_lib.inference.vllm import VLLMScorer

    wl = workloads()
    opts = VLLMOptions(
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        load_format="dummy" if args.dummy else "auto",
        enable_prefix_caching=not args.no_prefix_caching,
    )
    result: dict[str, Any] = {
        "schema": "plausibility-bench-vllm/1",
        "model": args.model,
        "dummy_weights": args.dummy,
        "batch": args.batch,
        "options": dataclasses.asdict(opts),
        "environment": environment(),
        "rows": [],
    }
    engine = None
    started = time.perf_counter()
    result["skipped_for_time"] = []
    for key in [r for r in ROWS if not args.only or any(o in r for o in args.only)]:
        if args.time_limit is not None and time.perf_counter() - started > args.time_limit:
            result["skipped_for_time"].append(key)
            continue
        name, mode_name = key.split("/")
        mode, prompt_name, new_tokens = MODES[mode_name]
        sampling = SamplingSettings(max_new_tokens=max(new_tokens, 1), trials=1, temperature=0.6)
        cfg = ScoreConfig(
            inputs=[], out_dir=Path("unused"), model=args.model, mode=mode, video=wl[name].video, sampling=sampling,
            dtype=args.dtype, backend="vllm", vllm=opts,
        )  # fmt: skip
        extra = {"ignore_eos": True} if mode == "generate" else {}
        scorer = VLLMScorer(cfg, load_prompt(prompt_name), sampling_kwargs=extra)
        text = clip_text(scorer.processor, scorer.prompt, {"video_url": "synthetic"}, wl[name].video, mode, False)
        # Every clip of every row has its own frames (seeded), so neither prefix caching nor vLLM's multimodal
        # processor cache can reuse a clip's work for another; the shared rubric before the video may be reused.
        base = 100_000 * (ROWS.index(key) + 1)
        sizes = [min(4, args.batch)] + [args.batch] * args.repeats  # a short warm-up, then the timed batches
        batches = [
            [
                Prepared(
                    {"video_url": f"synthetic-{r}-{i}"}, text, synthetic_video(wl[name], seed=base + 1000 * r + i), 0.0
                )
                for i in range(size)
            ]
            for r, size in enumerate(sizes)
        ]
        if engine is None:
            start = time.perf_counter()
            engine = scorer._engine()
            result["engine_start_s"] = round(time.perf_counter() - start, 1)
        scorer._llm = engine
        scorer.score_batch(batches[0])  # warm-up (this row's shapes)
        start = time.perf_counter()
        rows = []
        for batch in batches[1:]:
            rows += scorer.score_batch(batch)
        elapsed = time.perf_counter() - start
        row = {
            "key": f"{key}" + (f"-{new_tokens}" if new_tokens else ""),
            "workload": name,
            "mode": mode_name,
            "new_tokens": new_tokens,
            "visual_tokens": wl[name].visual_tokens(),
            "videos": len(rows),
            "seconds": round(elapsed, 3),
            "videos_per_s": round(len(rows) / elapsed, 3),
            "scored": sum(r["score"] is not None for r in rows),
        }
        print(json.dumps(row), flush=True)
        result["rows"].append(row)
        args.out.write_text(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2))
    return result


def environment() -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }
    try:
        import torch
        import vllm

        env.update(torch=torch.__version__, vllm=vllm.__version__)
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
    except ImportError as exc:
        env["missing"] = str(exc)
    import transformers

    env["transformers"] = transformers.__version__
    return env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--dummy", action="store_true", help="random weights from config.json (load_format=dummy)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=1, help="timed batches per row")
    p.add_argument("--time-limit", type=float, help="start no row after this many seconds (engine start included)")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    p.add_argument("--max-model-len", type=int, default=16384)
    p.add_argument("--no-prefix-caching", action="store_true")
    p.add_argument("--only", nargs="*", help="rows whose key contains one of these")
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
