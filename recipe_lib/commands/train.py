"""``plausibility train sft|grpo --config X.toml [--set key=value ...]`` and ``plausibility sweep RUN_DIR --data EVAL``.

Training runs in this process (CPU or one GPU; ``recipe_lib.train.sft`` / ``recipe_lib.train.grpo``). A killed run
resumes from its newest checkpoint when the same command is run again. ``plausibility train demo-data`` writes the
demo conversation datasets that ``configs/demo/*.toml`` point at.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="SFT or GRPO of the critic in this process (resumable)",
        description="Train with a cosmos-rl style TOML (configs/demo/sft.toml, configs/demo/grpo.toml). Relative "
        "paths in it are taken from the repository root, build/... from the build folder. Rerun the same command "
        "to resume a killed run.",
    )
    p.add_argument("kind", choices=["sft", "grpo", "demo-data"], help="what to run")
    p.add_argument("--config", type=Path, help="training TOML (required for sft and grpo)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting by its dotted TOML name, e.g. --set train.optm_lr=2e-3 --set local.max_steps=50",
    )
    p.add_argument("--restart", action="store_true", help="discard an earlier run in train.output_dir and start over")
    p.add_argument("--labels", choices=["binary", "graded"], default="binary", help="demo-data: label mode")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)

    s = sub.add_parser(
        "sweep",
        help="score every checkpoint of a training run on an eval split and plot the curves",
        description="Scores the run's starting model (step 0), each step checkpoint and final/ (cached per "
        "checkpoint under RUN_DIR/sweep) and writes sweep.csv, sweep.json, sweep_summary.json and sweep.png there. "
        "Like the recipe, checkpoints are scored by sampled answers (GRPO runs with their thinking prompt) with the "
        "recipe's sampling settings; the demo critic keeps the fast expected score unless --mode generate.",
    )
    s.add_argument("run_dir", type=Path, help="the train.output_dir of a run")
    s.add_argument("--data", required=True, help="eval dataset folder or table (video_url + pc)")
    s.add_argument(
        "--prompt",
        default=None,
        help="prompt YAML (a path or a name in prompts/) the run was trained with (default: found from the run's "
        "training conversations, else the eval conversations' for SFT and the thinking prompt for GRPO)",
    )
    s.add_argument(
        "--mode",
        choices=["auto", "expected", "generate"],
        default="auto",
        help="generate: sample answers like the recipe; expected: read p(1..5) in one pass; auto (default): "
        "generate, except expected for the demo critic (fast on a CPU)",
    )
    s.add_argument(
        "--run-kind",
        choices=["sft", "grpo"],
        default=None,
        help="what the run trained (default: from its run.json; a cosmos-rl export has none and counts as sft)",
    )
    s.add_argument(
        "--profile",
        choices=["demo", "full"],
        default="demo",
        help="device and dtype defaults (video and sampling settings follow the critic)",
    )
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--device", default=None)
    s.add_argument("--dtype", default=None)
    s.add_argument("--limit", type=int, help="score only the first N clips")
    s.add_argument("--no-start", action="store_true", help="do not score the starting model")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    from recipe_lib.commands._common import add_sampling_args, add_video_args

    add_video_args(s)
    add_sampling_args(s)
    s.set_defaults(func=run_sweep)


def load_config(kind: str, path: Path, pairs: list[str]):  # noqa: ANN201 - SFTConfig | GRPOConfig
    """The training config from ``path`` with ``--set`` overrides applied (values parsed as YAML scalars)."""
    from recipe_lib.commands._common import parse_params
    from recipe_lib.config import apply_overrides, load_toml
    from recipe_lib.train.config import training_config

    mapping = apply_overrides(load_toml(path), parse_params(pairs))
    return training_config(mapping, kind, where=str(path))


def run_train(args: argparse.Namespace) -> int:
    from recipe_lib.errors import ConfigError

    if args.kind == "demo-data":
        from recipe_lib.demo import prepare_demo_conversations

        data = prepare_demo_conversations(args.labels)
        print(f"SFT train: {data.sft_train}\nSFT eval:  {data.sft_eval}\nGRPO train: {data.grpo_train}")
        print(f"labels ({data.label_mode}): {data.counts}")
        return 0
    if args.config is None:
        raise ConfigError(
            f"'plausibility train {args.kind}' needs --config", hint=f"e.g. --config configs/demo/{args.kind}.toml"
        )
    cfg = load_config(args.kind, args.config, args.overrides)
    if args.kind == "sft":
        from recipe_lib.train.sft import train_sft

        result = train_sft(cfg, progress=not args.quiet, restart=args.restart)
    else:
        from recipe_lib.train.grpo import train_grpo

        result = train_grpo(cfg, progress=not args.quiet, restart=args.restart)
    summary = result.summary()
    if summary.get("resumed_from"):
        print(f"resumed from step {summary['resumed_from']}")
    print(f"{args.kind}: {summary['steps']} steps, {summary['trained_steps_now']} trained now")
    for key, value in summary.items():
        if key not in ("kind", "steps", "trained_steps_now", "resumed_from") and value is not None:
            print(f"  {key}: {value}")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from recipe_lib.commands._common import sampling_flags, video_flags
    from recipe_lib.prompts import load_prompt
    from recipe_lib.train.sweep import SweepConfig, plot_sweep, sweep_checkpoints

    if args.prompt is not None:
        load_prompt(args.prompt)  # a bad prompt file is reported before any checkpoint is loaded
    result = sweep_checkpoints(
        SweepConfig(
            run_dir=args.run_dir,
            eval_data=args.data,
            prompt=args.prompt,
            profile=args.profile,
            mode=args.mode,
            run_kind=args.run_kind,
            video_overrides=video_flags(args),
            sampling_overrides=sampling_flags(args),
            batch_size=args.batch_size,
            device=args.device,
            dtype=args.dtype,
            include_start=not args.no_start,
            limit=args.limit,
        ),
        progress=not args.quiet,
    )
    frame = result.frame()
    from recipe_lib.io import atomic_write_csv

    atomic_write_csv(result.out_dir / "sweep.csv", frame)
    plot_sweep(result).savefig(result.out_dir / "sweep.png", dpi=110)
    cols = [c for c in ("step", "checkpoint", "accuracy", "pearson", "majority_accuracy", "coverage") if c in frame]
    print("\n".join(result.summary_lines()))
    print(frame[cols].to_string(index=False))
    written = [result.out_dir / name for name in ("sweep.csv", "sweep_summary.json", "sweep.png")]
    print(f"written: {', '.join(map(str, written))}")
    return 0
