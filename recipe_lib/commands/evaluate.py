"""``plausibility evaluate --critic NAME=MODEL ... --data DIR --out DIR``: compare critics on one labelled split."""

from __future__ import annotations

import argparse
from pathlib import Path

from recipe_lib.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure one or more critics against labels: metrics with intervals, report, thresholds",
        description="Score a labelled split with each critic (cached per critic under OUT/scores/NAME), then write "
        "OUT/evaluation_report.html, OUT/evaluation_results.json, comparison.csv, groups.csv and "
        "detection_rates.csv. With the demo profile and no --critic, the demo critics are used (the untrained tiny "
        "critic and, when notebooks 03/04 have run, their checkpoints).",
    )
    p.add_argument(
        "--critic",
        action="append",
        default=[],
        metavar="NAME=MODEL",
        help="a critic to evaluate: short name = local folder or hub id, or a table of an outside critic's scores "
        "(.csv/.parquet/.jsonl: a video column, a score and optionally p1..p5) (repeatable)",
    )
    p.add_argument(
        "--calibration",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="apply a calibration file (from `plausibility calibrate`) to critic NAME's p(1..5) (repeatable)",
    )
    p.add_argument("--data", help="labelled dataset folder or table (demo default: the synthetic eval split)")
    p.add_argument("--out", type=Path, help="output folder (default: build/06_evaluation)")
    p.add_argument("--profile", choices=["demo", "full"], default="demo")
    p.add_argument("--mode", choices=["expected", "generate"], default="expected")
    p.add_argument("--threshold", type=float, default=4.0, help="good = label/score at least this (default: 4)")
    p.add_argument("--label-column", default="pc")
    p.add_argument("--prompt", default=None, help="prompt YAML (default: demo compact prompt / full video_reward)")
    p.add_argument("--split", help="split name when the dataset folder holds several")
    p.add_argument("--limit", type=int, help="evaluate only the first N clips")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for the intervals")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument(
        "--target-precision",
        type=float,
        help="choose the threshold with the most recall at this precision (default: maximise F1)",
    )
    p.add_argument(
        "--task",
        default="pc",
        help="what to measure: pc (default), sa, rule, or a comma list such as pc,sa,rule (joint is computed when pc "
        "and sa are both given); the first of pc/sa drives the comparison table and thresholds",
    )
    p.add_argument("--caption-column", default="caption", help="task sa: column with the caption (default: caption)")
    p.add_argument("--sa-column", default="sa", help="task sa: label column (default: sa)")
    p.add_argument("--no-thumbnails", action="store_true", help="leave clip thumbnails out of the report")
    p.add_argument("--publish", action="store_true", help="also copy the report into build/docs/reports/")
    p.set_defaults(func=run)


def parse_critics(
    pairs: list[str], option: str = "--critic", what: str = "MODEL", example: str = "sft=build/03_sft/checkpoints/final"
) -> dict[str, str] | None:
    critics: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"{option} {pair!r} is not NAME={what}", hint=f"e.g. {option} {example}")
        name, model = (x.strip() for x in pair.split("=", 1))
        if name in critics:
            raise ConfigError(f"critic name '{name}' is given twice to {option}")
        critics[name] = model
    return critics or None


def run(args: argparse.Namespace) -> int:
    from recipe_lib.commands._common import config_from_args
    from recipe_lib.evaluation.outside_scores import OutsideScoreResult
    from recipe_lib.stages.evaluate import EvalConfig, run_evaluate
    from recipe_lib.stages.score import scoring_lines, task_metric_line
    from recipe_lib.tasks import parse_tasks

    cfg = config_from_args(
        EvalConfig,
        args,
        renames={"eval_data": "data", "out_dir": "out", "label_key": "label_column", "n_boot": "resamples"},
        critics=parse_critics(args.critic),
        calibrations=parse_critics(args.calibration, "--calibration", "FILE", "sft=runs/sft_calibration.json"),
        objective="precision" if args.target_precision is not None else "f1",
        thumbnails=not args.no_thumbnails,
        tasks=parse_tasks(args.task),
    )
    result = run_evaluate(cfg)
    for name, by_task in result.task_scores.items():
        s0 = by_task.get(result.task)
        if isinstance(s0, OutsideScoreResult):
            summary = s0.summary()
            counts = f"{summary['unparsed']} unparsed, {summary['skipped']} skipped"
            print(f"{name}: scored {summary['scored']} clips, {counts}")
            print(f"  from the table {s0.table}: {len(s0.rows)} clips joined")
            for line in s0.join_lines():
                print(f"  {line}")
            continue
        for task, s in by_task.items():
            print("\n".join(scoring_lines(s, prefix=f"{name} [{task}]: ")))
    cols = ["n", "coverage", "accuracy", "within1", "mae", "pearson", "spearman", "qwk", "f1", "roc_auc"]
    print(result.table[cols].astype(float).round(3).to_string())
    cal = result.calibration_table()[["labels", "n_with_probs", "ece_p1_5", "ece_p_good", "brier_p_good"]]
    print("calibration (ECE: 0 = calibrated):")
    print(cal.to_string(float_format=lambda v: f"{v:.3f}"))
    for line in result.warnings():
        print(f"warning: {line}")
    for name, note in result.threshold_notes.items():
        choice = result.thresholds[name]
        if choice is not None:
            print(
                f"{name}: best threshold {choice.threshold:.3f} (precision {choice.precision:.3f}, "
                f"recall {choice.recall:.3f}, F1 {choice.f1:.3f})"
            )
        else:
            print(f"{name}: no threshold chosen: {note}")
    for name, suites in result.task_metrics.items():
        for task, suite in suites.items():
            print(task_metric_line(task, suite, prefix=f"{name} [{task}]: "))
    print(f"report: {result.report.html}")
    print(f"numbers: {result.report.json}")
    if args.publish:
        from recipe_lib.docs import publish_report

        print(f"published: {publish_report(result.report.html, 'evaluation')}")
    return 0
