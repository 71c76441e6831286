"""``plausibility merge CHECKPOINT --out DIR``: a LoRA adapter checkpoint merged into its base model, as a full folder.

LoRA runs save adapters only (megabytes); ``plausibility score``, ``sweep`` and the stages read them as they are. A
full folder is for readers that take no adapter (vLLM, cosmos-rl, other tools): ``recipe_lib.train.checkpoint.
merge_checkpoint``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="merge a LoRA adapter checkpoint into its base model (a full model folder)",
        description="Load the base model the adapter names (its adapter_config.json, else the run's run.json), apply "
        "the adapter, merge it and save model + processor to a new folder, written atomically; the disk is checked "
        "for room first.",
    )
    p.add_argument("checkpoint", type=Path, help="a LoRA checkpoint folder (holds adapter_config.json)")
    p.add_argument("--out", type=Path, required=True, help="the folder to write (new or empty)")
    p.add_argument("--device", default="auto", help="where to merge: auto, cpu, cuda (default: auto)")
    p.add_argument("--dtype", default=None, help="dtype of the saved weights (default: the base model's)")
    p.set_defaults(func=run_merge)


def run_merge(args: argparse.Namespace) -> int:
    from recipe_lib.train.checkpoint import merge_checkpoint

    out = merge_checkpoint(args.checkpoint, args.out, device=args.device, dtype=args.dtype)
    print(f"merged: {out}")
    return 0
