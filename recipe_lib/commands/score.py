"""``plausibility score VIDEOS... --out DIR``: score clips with the critic (resumable)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recipe_lib.commands._common import (
    add_model_args,
    add_profile_args,
    add_sampling_args,
    add_video_args,
    sampling_settings,
    video_settings,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score videos 1-5 for physical plausibility (resumable)",
        description="Score clips (files, folders, globs, a dataset folder or a CSV/parquet/JSONL table "
        "with a video_url column). Results are cached in OUT/results.jsonl: rerun to resume.",
    )
    p.add_argument("videos", nargs="+", help="video files, folders, globs, dataset folders or tables")
    p.add_argument("--out", required=True, type=Path, help="output folder")
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
    p.add_argument("--workers", type=int, default=2, help="CPU threads decoding clips ahead of the model")
    p.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    add_video_args(p)
    add_sampling_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recipe_lib.config import get_profile
    from recipe_lib.inference.scoring import ScoreConfig, score_videos
    from recipe_lib.metrics import metrics_from_rows

    profile = get_profile(args.profile)
    model = args.model or profile.model
    if args.profile == "demo" and not args.model:
        from recipe_lib.models.loading import ensure_demo_critic

        ensure_demo_critic(Path(model))
    cfg = ScoreConfig(
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
        workers=args.workers,
        backend=args.backend,
        trust_remote_code=args.trust_remote_code,
    )
    result = score_videos(cfg)
    s = result.summary()
    print(
        f"scored {s['scored']} of {s['inputs']} clips ({s['scored_this_run']} now, {s['from_cache']} cached), "
        f"{s['unparsed']} unparsed, {s['skipped']} skipped, {s['seconds']:.1f} s"
    )
    for skip in result.skipped:
        print(f"  skipped {skip['video']}: {skip['reason']}")
    m = metrics_from_rows(result.rows)
    if m.n:
        print(
            f"against labels: n={m.n} coverage={m.coverage:.2f} accuracy={m.accuracy:.3f} "
            f"pearson={m.pearson:.3f} spearman={m.spearman:.3f}"
        )
    print(f"results: {args.out / 'results.jsonl'}, {args.out / 'scores.csv'}")
    if not result.rows:
        print("error: nothing was scored; see the skipped clips above", file=sys.stderr)
        return 1
    return 0
