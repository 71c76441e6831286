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
    from recipe_lib.commands._common import add_config_args
    from recipe_lib.config import build_dir
    from recipe_lib.data.synthetic import SynthConfig

    default_out = build_dir() / "data" / "synthetic"
    parser = subparsers.add_parser(
        "synth",
        help="render synthetic physics clips with known violations",
        description=(
            "Render short mp4 clips of simple 2-D physics scenes, each plausible or with exactly one physics "
            "violation, plus a VideoPhy-2-style dataset, manifest.csv and summary.json."
        ),
    )
    add_config_args(
        parser,
        SynthConfig,
        names={"out_dir": "out"},
        defaults={"out_dir": default_out},
        types={"scenes": _names, "violations": _names},
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recipe_lib.commands._common import config_from_args
    from recipe_lib.data.synthetic import SynthConfig, generate_clips

    if not str(args.out):
        raise ConfigError("--out must name a folder")
    cfg = config_from_args(SynthConfig, args, renames={"out_dir": "out"}, out_dir=Path(args.out))
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
