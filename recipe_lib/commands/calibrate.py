"""``plausibility calibrate DATA --out FILE.json``: fit a calibration of p(1..5) on a labelled calibration split, for
``plausibility score --calibration FILE``."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from recipe_lib.commands._common import add_config_args, config_from_args
from recipe_lib.commands.score import add_scoring_args


def register(sub: argparse._SubParsersAction) -> None:
    from recipe_lib.stages.calibrate import CalibrateConfig

    p = sub.add_parser(
        "calibrate",
        help="fit a calibration of the critic's p(1..5) on labelled clips (for score --calibration)",
        description="Score a labelled calibration split with the critic (expected mode, cached under --scores-dir), "
        "fit temperature scaling (default) or isotonic regression of P(good) to its labels, and write the map as a "
        "small JSON file. Use a split that is not your test split; measure the result with `plausibility evaluate "
        "--calibration NAME=FILE`.",
    )
    p.add_argument("data", nargs="+", help="labelled clips: a dataset folder or a table with a label column")
    p.add_argument("--out", required=True, type=Path, help="the calibration file to write (.json)")
    p.add_argument(
        "--scores-dir",
        type=Path,
        help="folder caching the calibration split's scores (default: build/calibration/<name of --out>)",
    )
    add_config_args(p, CalibrateConfig, only=("method", "threshold", "label_column"))
    add_scoring_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recipe_lib.commands.score import score_config
    from recipe_lib.config import build_dir
    from recipe_lib.stages.calibrate import CalibrateConfig, run_calibrate

    scoring = copy.copy(args)
    scoring.videos = list(args.data)
    scoring.out = args.scores_dir or build_dir() / "calibration" / Path(args.out).stem
    cfg = config_from_args(CalibrateConfig, args, score=score_config(scoring), out_path=args.out)
    result = run_calibrate(cfg)
    print("\n".join(result.summary_lines()))
    return 0
