"""``plausibility rank VIDEOS... --group-by COLUMN | --group-pattern REGEX --out DIR``: best rollout per prompt."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recipe_lib.commands.score import add_scoring_args, print_summary, score_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rank",
        help="pick the most plausible of several rollouts of the same prompt",
        description="Score clips (cached like `score`), group the rollouts of one prompt and pick the most plausible "
        "of each group. Groups come from a column of the clips' table (--group-by) or from the named group 'group' "
        "of a regex matched against each file name (--group-pattern). Writes OUT/ranking.csv (one row per group: "
        "best clip, runner-up, margin) and OUT/ranking_clips.csv (every clip with its rank).",
    )
    p.add_argument("videos", nargs="+", help="video files, folders, globs, dataset folders or tables")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--group-by", metavar="COLUMN", help="column of the clips' table naming the prompt")
    how.add_argument(
        "--group-pattern",
        metavar="REGEX",
        help=r"regex on the file name with a named group 'group', e.g. '(?P<group>.+)_seed\d+\.mp4'",
    )
    add_scoring_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recipe_lib.evaluation.filtering import compile_group_pattern, rank_rollouts
    from recipe_lib.inference.scoring import score_videos

    if args.group_pattern is not None:
        compile_group_pattern(args.group_pattern)  # a bad pattern fails before any scoring
    result = score_videos(score_config(args))
    print_summary(result)
    ranking = rank_rollouts(
        result.rows, result.skipped, group_by=args.group_by, group_pattern=args.group_pattern, out_dir=args.out
    )
    for g in ranking.groups.to_dict(orient="records"):
        if g["best_video"] is None:
            print(f"{g['group']}: no scored clip ({g['n_unparsed']} unparsed, {g['n_skipped']} skipped)")
            continue
        margin = "no runner-up" if g["runner_up_video"] is None else f"margin {g['margin']:.3f}"
        print(f"{g['group']}: {Path(g['best_video']).name} ({g['best_value']:.3f}, {margin}, {g['n_scored']} scored)")
    if ranking.n_ungrouped:
        print(f"{ranking.n_ungrouped} clips fell in no group (see 'reason' in {ranking.clips_csv})")
    print(f"ranking: {ranking.ranking_csv}, {ranking.clips_csv}")
    if not result.rows:
        print("error: nothing was scored; see the skipped clips above", file=sys.stderr)
        return 1
    return 0
