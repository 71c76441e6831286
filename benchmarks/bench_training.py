"""Training-step benchmark: seconds per step of the in-process SFT and GRPO trainers on the demo, with the trainer's
speed settings off and on, in the same run.

    python benchmarks/bench_training.py --quick     # about 2 minutes on 2 cores
    python benchmarks/bench_training.py             # more steps, two rounds

Variants (each runs the real ``recipe_lib.train.loop.run_training`` on the demo conversations, demo configs):

* ``stock@112``  clips read at 112x112 (``[custom.vision]`` override: 64 visual tokens), ``local.speedups = false``,
  ``local.encoding_memo_mib = 0`` — the demo trainer before its speed work, but for GRPO's pi_old pass, which is not
  a setting (with ``mu_iterations = 1`` it is never run now);
* ``fast@112``   the same clips with the speed-ups and the encoding memo on;
* ``fast@56``    the demo as it ships: clips read at 56x56 (16 visual tokens), speed-ups and memo on.

Rounds alternate the variants (a busy neighbour slows all of them alike); a variant's figure is the median step time
over its rounds, the first two steps of each run left out (model warm-up). GRPO starts from the untrained demo
critic, so every completion runs to the 16-token cap: the same generation work for every variant.
Results: a table on stdout (ratios against ``stock@112``) and JSON (``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
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


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    read_size: int | None  # None: the conversations' own settings (the demo's 56x56)
    fast: bool


VARIANTS = (Variant("stock@112", 112, False), Variant("fast@112", 112, True), Variant("fast@56", None, True))


def _overrides(variant: Variant, kind: str, steps: int, out: Path, data: Any, model: Path) -> dict[str, Any]:
    over: dict[str, Any] = {
        "local.max_steps": steps,
        "local.speedups": variant.fast,
        "local.encoding_memo_mib": 2048 if variant.fast else 0,
        "validation.enable": False,
        "train.ckpt.enable_checkpoint": False,
        "train.output_dir": str(out / f"{kind}-{variant.name}"),
        "policy.model_name_or_path": str(model),
        "custom.dataset.path": str(data.sft_train if kind == "sft" else data.grpo_train),
    }
    if variant.read_size is not None:
        over["custom.vision.max_pixels"] = variant.read_size**2
        over["custom.vision.min_pixels"] = variant.read_size**2
    return over


def run_variant(variant: Variant, kind: str, steps: int, out: Path, data: Any, model: Path) -> list[float]:
    """Step times (s) of one run of ``kind`` under ``variant``; the run folder is started afresh."""
    from recipe_lib.config import CONFIGS_DIR, apply_overrides, load_toml
    from recipe_lib.train.config import training_config
    from recipe_lib.train.grpo import GRPO
    from recipe_lib.train.loop import run_training
    from recipe_lib.train.sft import SFT

    mapping = apply_overrides(
        load_toml(CONFIGS_DIR / "demo" / f"{kind}.toml"), _overrides(variant, kind, steps, out, data, model)
    )
    cfg = training_config(mapping, kind)
    result = run_training(cfg, SFT() if kind == "sft" else GRPO(), progress=False, restart=True)
    return [float(h["seconds"]) for h in result.history]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and one round")
    parser.add_argument("--sft-steps", type=int, default=None)
    parser.add_argument("--grpo-steps", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="JSON result (default build/bench/training.json)")
    args = parser.parse_args(argv)

    import torch

    from recipe_lib.config import build_dir
    from recipe_lib.demo import prepare_demo_conversations
    from recipe_lib.models.tiny import ensure_demo_critic

    sft_steps = args.sft_steps or (12 if args.quick else 30)
    grpo_steps = args.grpo_steps or (6 if args.quick else 12)
    rounds = args.rounds or (1 if args.quick else 2)
    work = build_dir() / "bench" / "training"
    data = prepare_demo_conversations("binary")
    model = ensure_demo_critic()
    times: dict[tuple[str, str], list[float]] = {}
    started = time.perf_counter()
    for r in range(rounds):
        order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))
        for variant in order:
            for kind, steps in (("sft", sft_steps), ("grpo", grpo_steps)):
                step_times = run_variant(variant, kind, steps, work, data, model)
                times.setdefault((kind, variant.name), []).extend(step_times[2:])
                print(
                    f"round {r + 1} {kind} {variant.name}: {statistics.median(step_times[2:]):.3f} s/step", flush=True
                )
    rows = []
    for kind in ("sft", "grpo"):
        base = statistics.median(times[(kind, VARIANTS[0].name)])
        for variant in VARIANTS:
            median = statistics.median(times[(kind, variant.name)])
            rows.append(
                {
                    "kind": kind,
                    "variant": variant.name,
                    "median_step_s": round(median, 4),
                    "steps_timed": len(times[(kind, variant.name)]),
                    "speedup_vs_stock": round(base / median, 2),
                }
            )
    print("\n| trainer | variant | s/step (median) | x stock@112 |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['kind']} | {row['variant']} | {row['median_step_s']:.3f} | {row['speedup_vs_stock']:.2f} |")
    result = {
        "schema": "plausibility-bench-training/1",
        "date": datetime.date.today().isoformat(),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "settings": {"sft_steps": sft_steps, "grpo_steps": grpo_steps, "rounds": rounds},
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = args.out or build_dir() / "bench" / "training.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nresult: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
