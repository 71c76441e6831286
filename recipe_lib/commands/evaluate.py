"""``plausibility evaluate --critic NAME=MODEL ... --data DIR --out DIR``: compare critics on one labelled split."""

from __future__ import annotations

import argparse

from recipe_lib.commands._common import add_config_args, config_from_args
from recipe_lib.errors import ConfigError

# EvalConfig fields whose option is named otherwise.
RENAMES = {"eval_data": "data", "out_dir": "out", "label_key": "label_column", "n_boot": "resamples"}


def register(sub: argparse._SubParsersAction) -> None:
    from recipe_lib.stages.evaluate import EvalConfig

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
    add_config_args(
        p,
        EvalConfig,
        only=("eval_data", "out_dir", "profile", "mode", "threshold", "label_key", "prompt", "split", "limit"),
        names=RENAMES,
    )
    add_config_args(
        p, EvalConfig, only=("batch_size", "device", "dtype", "n_boot", "seed", "target_precision"), names=RENAMES
    )
    p.add_argument(
        "--task",
        default="pc",
        help="what to measure: pc (default), sa, rule, or a comma list such as pc,sa,rule (joint is computed when pc "
        "and sa are both given); the first of pc/sa drives the comparison table and thresholds",
    )
    add_config_args(p, EvalConfig, only=("caption_column", "sa_column", "thumbnails"))
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
    from recipe_lib.evaluation.outside_scores import OutsideScoreResult
    from recipe_lib.stages.evaluate import EvalConfig, run_evaluate
    from recipe_lib.stages.score import scoring_lines, task_metric_line
    from recipe_lib.tasks import parse_tasks

    cfg = config_from_args(
        EvalConfig,
        args,
        renames=RENAMES,
        critics=parse_critics(args.critic),
        calibrations=parse_critics(args.calibration, "--calibration", "FILE", "sft=runs/sft_calibration.json"),
        objective="precision" if args.target_precision is not None else "f1",
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
