"""``plausibility prepare videophy2|custom``: bring labelled clips onto local disk as datasets the recipe reads."""

from __future__ import annotations

import argparse
from pathlib import Path


def _pair(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected SOURCE=TARGET, got '{text}'")
    src, dst = text.split("=", 1)
    return src.strip(), dst.strip()


def register(sub: argparse._SubParsersAction) -> None:
    from recipe_lib.data.download import DEFAULT_DEADLINE

    p = sub.add_parser(
        "prepare",
        help="prepare VideoPhy-2 or your own labelled videos as datasets",
        description="Check labels, bring clips onto local disk and save datasets "
        "(with an account of every dropped row).",
    )
    inner = p.add_subparsers(dest="dataset", metavar="DATASET")

    v = inner.add_parser(
        "videophy2",
        help="VideoPhy-2 (hub id, save_to_disk folder or CSV/parquet/JSONL) -> dataset with local video paths",
        description="Load VideoPhy-2 labels, validate them, download or locate every clip and save a dataset folder "
        "(save_to_disk) plus prepare_report.json. Rows that cannot be used are skipped and listed, never dropped "
        "silently.",
    )
    v.add_argument("--source", required=True, help="videophysics/videophy2_train, a save_to_disk folder or a table")
    v.add_argument("--out", required=True, type=Path, help="output dataset folder")
    v.add_argument("--split", help="split to read (hub default: train/test by id; needed for a multi-split folder)")
    v.add_argument(
        "--download",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="fetch http(s) video URLs into the cache (default: --no-download, offline: local files only)",
    )
    v.add_argument("--offline", dest="download", action="store_false", help="same as --no-download")
    v.add_argument("--videos-dir", type=Path, help="folder of clips already on disk (matched by path or file name)")
    v.add_argument("--cache-dir", type=Path, help="download cache (default: build/cache/videos)")
    v.add_argument("--workers", type=int, default=4, help="parallel downloads and clip checks (default 4)")
    v.add_argument("--limit", type=int, help="use only the first N rows")
    v.add_argument(
        "--rename",
        type=_pair,
        action="append",
        default=[],
        metavar="SRC=DST",
        help="map a source column onto a VideoPhy-2 column, e.g. videopath=video_url (repeatable)",
    )
    v.add_argument(
        "--no-check-videos",
        dest="check_videos",
        action="store_false",
        help="skip opening every clip to check it is a readable video",
    )
    v.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a server (default 30)")
    v.add_argument(
        "--download-deadline",
        type=float,
        default=DEFAULT_DEADLINE,
        help="seconds one clip's download may take in all: connect, response headers and body of every attempt, "
        "whatever the server's pace; at the deadline the connection is closed and the clip counts as failed, tried "
        "again on the next run (default %(default)g)",
    )
    v.add_argument("--retries", type=int, default=3, help="extra attempts for transient download errors")
    v.add_argument("--max-mb", type=float, default=2048, help="size cap per downloaded file in MB (default 2048)")
    v.set_defaults(func=run_videophy2)

    c = inner.add_parser(
        "custom",
        help="your own label sheet (.xlsx/.csv) + video folder -> train/ and eval/ datasets",
        description="Match each link of a label sheet to a video in --videos, check and scale the labels, split them "
        "(stratified) and save train/, eval/ and split_info.json. Links are matched by the file name of the URL "
        "unless --link-pattern or --link-template says otherwise.",
    )
    c.add_argument("--sheet", required=True, type=Path, help="label sheet (.xlsx or .csv)")
    c.add_argument("--videos", required=True, type=Path, help="folder holding the videos")
    c.add_argument("--out", required=True, type=Path, help="output folder (train/, eval/, split_info.json)")
    c.add_argument("--sheet-name", help="worksheet to read (default: the first)")
    c.add_argument("--link-column", default="output_link", help="column with the video links (default output_link)")
    c.add_argument(
        "--label-column",
        default="Physical common sense",
        help="column with the labels (default 'Physical common sense')",
    )
    c.add_argument("--caption-column", help="column with a caption (used when there is no prompt file)")
    rule = c.add_mutually_exclusive_group()
    rule.add_argument(
        "--link-pattern",
        metavar="REGEX",
        help="regex with a named group 'name' giving the file name, e.g. 'renders/(?P<name>[^?]+)'",
    )
    rule.add_argument(
        "--link-template",
        metavar="TEMPLATE",
        help="file name template over {name} {stem} {suffix} {ext} {path} {parent} {host} {row}",
    )
    c.add_argument("--prompts-dir", type=Path, help="folder of <video stem>.txt captions")
    c.add_argument("--scale-labels", action="store_true", help="map labels from --label-range (default 0-1) to 1-5")
    c.add_argument(
        "--label-range",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        help="declared range of the raw labels, with --scale-labels (default 0 1)",
    )
    c.add_argument(
        "--balance-labels",
        action="store_true",
        help="resample the train split to the mean count per label (eval is never balanced)",
    )
    c.add_argument("--eval-size", type=float, default=0.1, help="share of rows for eval (default 0.1)")
    c.add_argument("--seed", type=int, default=42, help="seed of the split and of balancing (default 42)")
    c.add_argument(
        "--no-check-videos",
        dest="check_videos",
        action="store_false",
        help="skip opening every clip to check it is a readable video",
    )
    c.set_defaults(func=run_custom)

    k = inner.add_parser(
        "conversations",
        help="clip dataset (video_url + pc) -> training conversations for SFT or GRPO",
        description="Write the conversation dataset the trainers read (in-process and cosmos-rl): SFT pairs the rubric "
        "prompt with the answer <answer>N</answer>; GRPO keeps the thinking prompt and the label as reference.",
    )
    k.add_argument("--data", required=True, help="clip dataset folder or table (video_url, pc)")
    k.add_argument("--kind", choices=["sft", "grpo"], required=True)
    k.add_argument("--out", required=True, type=Path, help="output dataset folder")
    k.add_argument("--prompt", help="prompt YAML (default: video_reward for sft, video_reward_with_thinking for grpo)")
    k.add_argument("--balance-labels", action="store_true", help="resample to the mean count per label (GRPO)")
    k.add_argument("--seed", type=int, default=42)
    k.add_argument("--use-caption", action="store_true", help="add each clip's caption to the user turn")
    k.set_defaults(func=run_conversations)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_conversations(args: argparse.Namespace) -> int:
    from recipe_lib.commands._common import config_from_args
    from recipe_lib.data.conversations import ConversationsConfig, prepare_conversations

    result = prepare_conversations(config_from_args(ConversationsConfig, args, renames={"out_dir": "out"}))
    print("\n".join(result.summary_lines()))
    return 0


def run_videophy2(args: argparse.Namespace) -> int:
    from recipe_lib.commands._common import config_from_args
    from recipe_lib.data.videophy2 import VideoPhy2Config, prepare_videophy2

    cfg = config_from_args(
        VideoPhy2Config,
        args,
        renames={"out_dir": "out"},
        rename=dict(args.rename),
        max_bytes=int(args.max_mb * 1024 * 1024) if args.max_mb else None,
    )
    result = prepare_videophy2(cfg)
    print("\n".join(result.summary_lines()))
    return 0


def run_custom(args: argparse.Namespace) -> int:
    from recipe_lib.commands._common import config_from_args
    from recipe_lib.data.custom import CustomDataConfig, prepare_custom

    cfg = config_from_args(
        CustomDataConfig,
        args,
        renames={"videos_dir": "videos", "out_dir": "out"},
        label_range=tuple(args.label_range) if args.label_range else None,
    )
    result = prepare_custom(cfg)
    print("\n".join(result.summary_lines()))
    return 0
