"""``plausibility synth`` — render known-truth synthetic physics clips (see :mod:`recipe_lib.data.synthetic`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from recipe_lib.errors import ConfigError


def _names(text: str) -> list[str] | None:
    """A comma list of names; ``all`` (or nothing) means every name."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names or names == ["all"]:
        return None
    return names


def register(subparsers: argparse._SubParsersAction) -> None:
    from recipe_lib.config import build_dir
    from recipe_lib.data.synthetic import SCENES, VIOLATIONS

    default_out = build_dir() / "data" / "synthetic"
    parser = subparsers.add_parser(
        "synth",
        help="render synthetic physics clips with known violations",
        description=(
            "Render short mp4 clips of simple 2-D physics scenes, each plausible or with exactly one physics "
            "violation, plus a VideoPhy-2-style dataset, manifest.csv and summary.json."
        ),
    )
    parser.add_argument("--n", type=int, default=60, help="number of clips (default 60)")
    parser.add_argument("--out", type=Path, default=default_out, help=f"output folder (default {default_out})")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files")
    parser.add_argument(
        "--style",
        choices=("varied", "contrast"),
        default="varied",
        help="varied colours and sizes, or contrast (black background, grey floor, white objects)",
    )
    parser.add_argument("--width", type=int, default=112, help="frame width in pixels (even, >= 32)")
    parser.add_argument("--height", type=int, default=112, help="frame height in pixels (even, >= 32)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (>= 8)")
    parser.add_argument("--fps", type=int, default=8, help="frames per second")
    parser.add_argument(
        "--plausible-fraction", type=float, default=0.5, help="share of clips without a violation (0-1, default 0.5)"
    )
    parser.add_argument(
        "--scenes", type=_names, default=None, help=f"comma list of scenes (default all: {', '.join(SCENES)})"
    )
    parser.add_argument(
        "--violations",
        type=_names,
        default=None,
        help=f"comma list of violations (default all that apply: {', '.join(VIOLATIONS)})",
    )
    parser.add_argument("--workers", type=int, default=0, help="worker processes (0 = one per CPU core)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recipe_lib.data.synthetic import SynthConfig, generate_clips

    if not str(args.out):
        raise ConfigError("--out must name a folder")
    cfg = SynthConfig(
        n=args.n,
        out_dir=Path(args.out),
        seed=args.seed,
        style=args.style,
        width=args.width,
        height=args.height,
        frames=args.frames,
        fps=args.fps,
        plausible_fraction=args.plausible_fraction,
        scenes=args.scenes,
        violations=args.violations,
        workers=args.workers,
    )
    result = generate_clips(cfg)
    print(f"wrote {result.n_clips} clips ({cfg.width}x{cfg.height}, {cfg.frames} frames, {result.codec}) "
          f"in {result.elapsed_s:.1f} s")  # fmt: skip
    print(f"  videos:   {result.out_dir / 'videos'}")
    print(f"  dataset:  {result.dataset_dir}")
    print(f"  manifest: {result.manifest_csv}")
    print(f"  summary:  {result.out_dir / 'summary.json'}")
    print("by violation: " + ", ".join(f"{name} {count}" for name, count in result.counts_by_violation.items()))
    print("by pc:        " + ", ".join(f"{pc}: {count}" for pc, count in result.counts_by_pc.items()))
    return 0
