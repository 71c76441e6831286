"""``plausibility tiny-model``: build a tiny demo critic (Qwen2.5-VL, or Qwen3-VL) into a folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from recipe_lib.models.family import FAMILIES, QWEN3_VL
from recipe_lib.models.tiny import demo_model_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tiny-model",
        help="build the tiny demo critic (random Qwen2.5-VL, ~3 MB) used by the demo profile",
        description="Build a tiny critic: a locally trained tokenizer, the family's processor and a randomly "
        "initialised ~0.8 M parameter model — Qwen2.5-VL (the demo critic, Cosmos-Reason1's family) or Qwen3-VL "
        "(Cosmos-Reason2's family). Deterministic for a given seed; needs no network.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"folder to write (default: {demo_model_dir()}; for --family qwen3-vl the folder tiny-critic-qwen3-vl "
        "beside it)",
        metavar="DIR",
    )
    parser.add_argument(
        "--family",
        choices=FAMILIES,
        default="qwen2.5-vl",
        help="architecture of the tiny critic (default: qwen2.5-vl, the demo profile's critic)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the weight initialisation (default: 0)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete tiny critic is there")
    parser.add_argument(
        "--arch",
        help="instead of a tiny critic, save a full-size architecture (qwen2.5-vl-7b: Cosmos-Reason1-7B's shape; "
        "qwen3-vl-8b: Cosmos-Reason2-8B's) with seeded random weights and the tokenizer of the tiny critic of its "
        "family — a local checkpoint for benchmarks and launch rehearsals (needs --out)",
    )
    parser.add_argument("--config-only", action="store_true", help="with --arch: config and tokenizer, no weights")
    parser.add_argument("--device", default="auto", help="with --arch: where the weights are built (default: auto)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recipe_lib.models.tiny import (
        TinyCriticConfig,
        build_tiny_critic,
        count_parameters,
        folder_size,
        tiny_critic_family,
    )

    if args.arch:
        from recipe_lib.errors import ConfigError
        from recipe_lib.models.arch import architecture_names, save_random_critic

        if args.arch not in architecture_names() or args.out is None:
            raise ConfigError(
                "--arch needs a known architecture and --out",
                hint=f"e.g. --arch {architecture_names()[0]} --out DIR (known: {', '.join(architecture_names())})",
            )
        out = save_random_critic(args.out, args.arch, weights=not args.config_only, seed=args.seed, device=args.device)
        what = "config and tokenizer" if args.config_only else "seeded random weights"
        print(f"saved {args.arch} ({what}) to {out}")
        return 0
    if args.family == QWEN3_VL:
        from recipe_lib.models.tiny_qwen3 import TinyQwen3Config, build_tiny_qwen3_critic, default_qwen3_dir

        default, label = default_qwen3_dir, "tiny Qwen3-VL critic"
        build = lambda folder: build_tiny_qwen3_critic(folder, TinyQwen3Config(seed=args.seed))  # noqa: E731
    else:
        default, label = demo_model_dir, "tiny critic"
        build = lambda folder: build_tiny_critic(folder, TinyCriticConfig(seed=args.seed))  # noqa: E731
    out = Path(args.out).expanduser().resolve() if args.out is not None else default()
    if tiny_critic_family(out) == args.family and not args.force:
        print(f"tiny critic already built at {out} (use --force to rebuild)")
    else:
        build(out)
        print(f"saved {label} to {out}")
    print(f"parameters: {count_parameters(out):,}")
    print(f"size on disk: {folder_size(out) / 1e6:.1f} MB")
    return 0
