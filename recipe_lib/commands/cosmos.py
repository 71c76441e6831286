"""``plausibility cosmos render|check|launch``: multi-GPU SFT and GRPO with cosmos-rl."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _quiet_cosmos() -> None:
    """cosmos-rl logs INFO lines on import and config checks; keep warnings and errors only (unless set)."""
    os.environ.setdefault("COSMOS_LOG_LEVEL", "WARNING")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cosmos",
        help="render, check and launch multi-GPU SFT/GRPO runs with cosmos-rl",
        description="Full-scale training with cosmos-rl 0.4.7: render a config for your GPUs, model and dataset "
        "(checked against cosmos-rl's schema), see what this machine lacks, and print or run the launch command.",
    )
    actions = p.add_subparsers(dest="cosmos_action", metavar="ACTION")

    r = actions.add_parser("render", help="write a cosmos-rl TOML config for a GPU count, model and dataset")
    r.add_argument("--kind", choices=["sft", "custom_sft", "grpo"], required=True, help="which shipped config to adapt")
    r.add_argument("--gpus", type=int, default=None, help="GPUs on the node: SFT any count, GRPO 2, 4 or 8")
    r.add_argument("--model", default=None, help="hub id (nvidia/Cosmos-Reason1-7B) or a local checkpoint folder")
    r.add_argument("--dataset", default=None, help="conversation dataset folder (save_to_disk) to train on")
    r.add_argument("--eval-dataset", default=None, help="conversation dataset evaluated during training")
    r.add_argument("--output-dir", default=None, help="where cosmos-rl writes checkpoints (default: the config's)")
    r.add_argument("--out", required=True, type=Path, help="a .toml path, or a folder for <kind>_<gpus>gpu.toml")
    r.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a cosmos-rl key by its dotted name, e.g. --set train.max_num_steps=10 --set custom.vision.fps=4",
    )
    r.set_defaults(func=run_render)

    c = actions.add_parser("check", help="list what a cosmos-rl launch needs that this machine lacks")
    c.add_argument("--kind", choices=["sft", "custom_sft", "grpo"], default="sft")
    c.add_argument("--gpus", type=int, default=None, help="GPUs the run will use")
    c.add_argument("--config", type=Path, default=None, help="also validate this cosmos-rl TOML config")
    c.set_defaults(func=run_check)

    lp = actions.add_parser("launch", help="print the cosmos-rl command for a config (run it with --run)")
    lp.add_argument("config", type=Path, help="cosmos-rl TOML config (from 'plausibility cosmos render')")
    lp.add_argument("--entry", type=Path, default=None, help="entry script (default: the one for the config's kind)")
    lp.add_argument("--log-dir", type=Path, default=None, help="folder for the controller and worker logs")
    lp.add_argument("--run", action="store_true", help="run it (needs GPUs, redis-server, cosmos-rl; vllm for GRPO)")
    lp.set_defaults(func=run_launch)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_render(args: argparse.Namespace) -> int:
    _quiet_cosmos()
    from recipe_lib.commands._common import parse_params
    from recipe_lib.config import load_toml
    from recipe_lib.train.cosmos import ENTRIES, gpus_needed, write_config

    path = write_config(
        args.out,
        args.kind,
        model=args.model,
        dataset=args.dataset,
        n_gpus=args.gpus,
        output_dir=args.output_dir,
        eval_dataset=args.eval_dataset,
        settings=parse_params(args.overrides),
    )
    print(f"wrote {path} ({gpus_needed(load_toml(path))} GPUs; valid for cosmos-rl)")
    print(f"launch: plausibility cosmos launch {path} --run   (or: cosmos-rl --config {path} {ENTRIES[args.kind]})")
    return 0


def run_check(args: argparse.Namespace) -> int:
    _quiet_cosmos()
    from recipe_lib.config import load_toml
    from recipe_lib.train.cosmos import SDPA_NOTE, check_prerequisites, gpus_needed, validate_config_file

    gpus = args.gpus
    if args.config is not None:
        validate_config_file(args.config)
        gpus = gpus or gpus_needed(load_toml(args.config))
        print(f"config {args.config}: valid for cosmos-rl, needs {gpus} GPUs")
    pre = check_prerequisites(args.kind, gpus)
    print(f"CUDA GPUs: {pre.gpus}")
    print(f"redis-server: {pre.redis_server or 'not found'}")
    print(f"cosmos-rl: {pre.cosmos_rl or 'not found'}")
    print(f"vllm: {'installed' if pre.vllm else 'not installed'}" + ("" if args.kind == "grpo" else " (GRPO only)"))
    print(f"flash-attn: {'installed' if pre.flash_attn else 'not installed (' + SDPA_NOTE + ')'}")
    if pre.ok:
        print(f"ready to launch {args.kind}")
        return 0
    for item in pre.missing:
        print(f"missing: {item}")
    return 1


def run_launch(args: argparse.Namespace) -> int:
    _quiet_cosmos()
    from recipe_lib.train.cosmos import launch

    result = launch(args.config, entry=args.entry, dry_run=not args.run, log_dir=args.log_dir)
    if not result.ran:
        print(result.command_line)
        print("(dry run: add --run to launch)")
        return 0
    return int(result.returncode or 0)
