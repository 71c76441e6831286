"""``plausibility calibrate DATA --out FILE.json``: fit a calibration of p(1..5) on a labelled calibration split, for
``plausibility score --calibration FILE``."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from recipe_lib.commands.score import add_scoring_args


def register(sub: argparse._SubParsersAction) -> None:
    from recipe_lib.evaluation.calibration import CALIBRATION_METHODS

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
    p.add_argument(
        "--method",
        choices=CALIBRATION_METHODS,
        default="temperature",
        help="temperature: one parameter, keeps the most likely digit (default); isotonic: monotone map of P(good)",
    )
    p.add_argument(
        "--threshold", type=float, default=4.0, help="good = label (and digit) at least this: P(good) (default: 4)"
    )
    p.add_argument("--label-column", default="pc", help="the label column of the calibration data (default: pc)")
    add_scoring_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recipe_lib.commands.score import score_config
    from recipe_lib.config import build_dir
    from recipe_lib.stages.calibrate import CalibrateConfig, run_calibrate

    scoring = copy.copy(args)
    scoring.videos = list(args.data)
    scoring.out = args.scores_dir or build_dir() / "calibration" / Path(args.out).stem
    cfg = CalibrateConfig(
        score=score_config(scoring),
        out_path=args.out,
        method=args.method,
        label_column=args.label_column,
        threshold=args.threshold,
    )
    result = run_calibrate(cfg)
    print("\n".join(result.summary_lines()))
    return 0
