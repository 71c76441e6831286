"""``plausibility score VIDEOS... --out DIR``: score clips with the critic (resumable), write the per-video files, a
keep/reject manifest at ``--threshold`` and an HTML report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from recipe_lib.commands._common import (
    add_model_args,
    add_profile_args,
    add_sampling_args,
    add_video_args,
    sampling_settings,
    video_settings,
)

if TYPE_CHECKING:
    from recipe_lib.inference.scoring import ScoreConfig, ScoreResult


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score videos 1-5 for physical plausibility (resumable)",
        description="Score clips (files, folders, globs, a dataset folder or a CSV/parquet/JSONL table "
        "with a video_url column). Results are cached in OUT/results.jsonl: rerun to resume.",
    )
    p.add_argument("videos", nargs="+", help="video files, folders, globs, dataset folders or tables")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    add_scoring_args(p)
    add_filter_args(p)
    p.set_defaults(func=run)


def add_scoring_args(p: argparse.ArgumentParser) -> None:
    """Critic, prompt, mode, batching and video/sampling options shared by the commands that score clips."""
    add_profile_args(p)
    add_model_args(p)
    p.add_argument("--prompt", default="video_reward", help="prompt YAML path or name in prompts/")
    p.add_argument(
        "--mode",
        choices=["expected", "generate"],
        default="expected",
        help="expected: read p(1..5) in one pass (fast); generate: sample answers",
    )
    p.add_argument("--batch-size", type=int, help="clips per forward pass")
    p.add_argument("--split", help="split name when a dataset folder holds several")
    p.add_argument("--limit", type=int, help="score only the first N clips")
    p.add_argument("--use-caption", action="store_true", help="add each clip's caption to the prompt")
    p.add_argument("--workers", type=int, help="CPU threads decoding clips ahead (default: cores-1, 2-8)")
    p.add_argument("--max-batch-tokens", type=int, help="cap on visual tokens per batch (GPU memory)")
    p.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    add_video_args(p)
    add_sampling_args(p)


def add_filter_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("filtering and report")
    g.add_argument(
        "--threshold",
        type=float,
        default=4.0,
        help="keep a clip when its expected score (else its score) is at least this (default: 4)",
    )
    g.add_argument(
        "--report",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write OUT/report.html and OUT/evaluation_results.json (default: on)",
    )
    g.add_argument("--report-title", default=None, help="title of the HTML report")
    g.add_argument("--label-column", default="pc", help="label column when the clips' table has labels (default: pc)")


def score_config(args: argparse.Namespace) -> ScoreConfig:
    """The scoring stage's config from the shared arguments (used by score and rank)."""
    from recipe_lib.inference.scoring import ScoreConfig, default_workers
    from recipe_lib.profiles import get_profile
    from recipe_lib.prompts import load_prompt

    load_prompt(args.prompt)  # a bad prompt file is reported before any model is built or loaded
    profile = get_profile(args.profile)
    model = args.model or profile.model
    if args.profile == "demo" and not args.model:
        from recipe_lib.demo import ensure_demo_critic

        ensure_demo_critic(Path(model))
    return ScoreConfig(
        inputs=list(args.videos),
        out_dir=args.out,
        model=model,
        prompt=args.prompt,
        mode=args.mode,
        video=video_settings(args),
        sampling=sampling_settings(args),
        batch_size=args.batch_size or profile.batch_size,
        device=args.device or profile.device,
        dtype=args.dtype or profile.dtype,
        split=args.split,
        limit=args.limit,
        use_caption=args.use_caption,
        workers=args.workers or default_workers(),
        max_batch_tokens=args.max_batch_tokens,
        backend=args.backend,
        trust_remote_code=args.trust_remote_code,
        label_column=getattr(args, "label_column", "pc"),
    )


def print_summary(result: ScoreResult) -> None:
    s = result.summary()
    print(
        f"scored {s['scored']} of {s['inputs']} clips ({s['scored_this_run']} now, {s['from_cache']} cached), "
        f"{s['unparsed']} unparsed, {s['skipped']} skipped, {s['seconds']:.1f} s"
    )
    for skip in result.skipped:
        print(f"  skipped {skip['video']}: {skip['reason']}")


def run(args: argparse.Namespace) -> int:
    from recipe_lib.filtering import write_filter_outputs
    from recipe_lib.inference.scoring import score_videos
    from recipe_lib.metrics import labelled_rows, suite_from_rows
    from recipe_lib.report import CriticScores, ReportConfig, write_report

    cfg = score_config(args)
    result = score_videos(cfg)
    print_summary(result)
    filtered = write_filter_outputs(result.rows, result.skipped, args.out, args.threshold, args.label_column)
    c = filtered.counts
    print(
        f"at threshold {args.threshold:g}: keep {c['keep']}, reject {c['reject']}, "
        f"unparsed {c['unparsed']}, skipped {c['skipped']}"
    )
    suite = None
    if labelled_rows(result.rows, args.label_column):
        suite = suite_from_rows(result.rows, args.label_column, threshold=args.threshold)
        m = suite.values
        print(
            f"against labels: n={suite.n} coverage={suite.coverage:.2f} accuracy={m['accuracy']:.3f} "
            f"within1={m['within1']:.3f} pearson={m['pearson']:.3f} spearman={m['spearman']:.3f}"
        )
    print(f"results: {filtered.predictions_csv}, {filtered.predictions_jsonl}, manifest: {filtered.manifest_csv}")
    if args.report:
        report = write_report(
            [
                CriticScores(
                    name=Path(cfg.model).name or cfg.model,
                    model=cfg.model,
                    rows=result.rows,
                    skipped=result.skipped,
                    metrics=suite,
                )
            ],
            ReportConfig(
                out_path=args.out / "report.html",
                title=args.report_title or f"Plausibility scores: {len(result.rows) + len(result.skipped)} clips",
                subtitle=f"critic {cfg.model}, prompt {cfg.prompt}, mode {cfg.mode}",
                threshold=args.threshold,
                label_key=args.label_column,
                workers=cfg.workers,
            ),
        )
        print(f"report: {report.html}")
    if not result.rows:
        print("error: nothing was scored; see the skipped clips above", file=sys.stderr)
        return 1
    return 0
