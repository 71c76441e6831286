"""``plausibility score VIDEOS... --out DIR``: score clips with the critic (resumable), write the per-video files, a
keep/reject manifest at ``--threshold`` and an HTML report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from recipe_lib.commands._common import (
    add_config_args,
    add_model_args,
    add_profile_args,
    add_sampling_args,
    add_video_args,
    config_from_args,
    sampling_flags,
    video_flags,
)
from recipe_lib.inference.score_config import EndpointOptions, VLLMOptions

if TYPE_CHECKING:
    from recipe_lib.inference.score_config import ScoreConfig, ScoreResult


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score videos 1-5 for physical plausibility (resumable)",
        description="Score clips (files, folders, globs, a dataset folder or a CSV/parquet/JSONL table "
        "with a video_url column; paths or http(s)/s3/gs URLs). Results are cached in OUT/results.sqlite: rerun to "
        "resume. --engine ray scores on a Ray cluster.",
    )
    p.add_argument("videos", nargs="+", help="video files, folders, globs, dataset folders or tables")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    add_scoring_args(p)
    add_task_args(p)
    add_filter_args(p)
    p.set_defaults(func=run)


def add_task_args(p: argparse.ArgumentParser) -> None:
    """What each clip is scored for (recipe_lib.tasks) and the columns the tasks read."""
    g = p.add_argument_group("tasks")
    g.add_argument(
        "--task",
        default="pc",
        help="pc (physics, default), sa (semantic adherence to the caption), rule (one judgement per listed physical "
        "rule), or a comma list such as pc,sa (joint is then computed)",
    )
    g.add_argument(
        "--caption-column", default="caption", help="task sa: column with the text the video should show (caption)"
    )
    g.add_argument("--sa-column", default="sa", help="task sa: label column (default: sa)")
    g.add_argument("--sa-prompt", default=None, help="task sa: prompt YAML (default: prompts/semantic_adherence.yaml)")
    g.add_argument("--rule-prompt", default=None, help="task rule: prompt YAML (default: prompts/physical_rule.yaml)")


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
    p.add_argument(
        "--backend",
        choices=["hf", "vllm", "openai"],
        default="hf",
        help="hf: transformers in this process; vllm: a vLLM engine in this process; openai: a served endpoint",
    )
    add_config_args(p.add_argument_group("vLLM engine (--backend vllm)"), VLLMOptions)
    add_config_args(p.add_argument_group("served endpoint (--backend openai)"), EndpointOptions)
    g = p.add_argument_group("scaling out")
    g.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this process; ray: a Ray cluster (needs the ray extra)",
    )
    g.add_argument("--address", help="Ray cluster head as host:port, or 'auto' (default: start a local cluster)")
    g.add_argument("--num-workers", type=int, default=1, help="ray: scoring actors, one critic each (default: 1)")
    g.add_argument("--gpus-per-worker", type=float, default=0.0, help="ray: GPUs per scoring actor (default: 0)")
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
    g.add_argument("--label-column", default=None, help="label column when the clips' table has labels (default: pc)")
    g.add_argument(
        "--keep-on",
        choices=["pc", "sa", "joint"],
        default=None,
        help="what the keep/reject manifest reads: pc, sa, or joint (both at least the threshold); default: pc when "
        "scored, else sa",
    )
    g.add_argument(
        "--calibration",
        type=Path,
        default=None,
        metavar="FILE",
        help="calibrate p(1..5) with this file from `plausibility calibrate` before deciding (expected mode)",
    )


def score_config(args: argparse.Namespace) -> ScoreConfig:
    """The scoring stage's config from the shared arguments (used by score and rank)."""
    from recipe_lib.inference.score_config import ScoreConfig, default_workers
    from recipe_lib.profiles import get_profile
    from recipe_lib.prompts import load_prompt

    load_prompt(args.prompt)  # a bad prompt file is reported before any model is built or loaded
    profile = get_profile(args.profile)
    model = profile.critic(args.model)
    return ScoreConfig(
        inputs=list(args.videos),
        out_dir=args.out,
        model=model,
        prompt=args.prompt,
        mode=args.mode,
        video_overrides=video_flags(args),
        sampling_overrides=sampling_flags(args),
        batch_size=args.batch_size or profile.batch_size,
        device=args.device or profile.device,
        dtype=args.dtype or profile.dtype,
        split=args.split,
        limit=args.limit,
        use_caption=args.use_caption,
        workers=args.workers or default_workers(),
        max_batch_tokens=args.max_batch_tokens,
        backend=args.backend,
        vllm=config_from_args(VLLMOptions, args),
        endpoint=config_from_args(EndpointOptions, args),
        trust_remote_code=args.trust_remote_code,
        label_column=getattr(args, "label_column", None) or "pc",
        require_label_column=getattr(args, "label_column", None) is not None,
        engine=args.engine,
        address=args.address,
        num_workers=args.num_workers,
        gpus_per_worker=args.gpus_per_worker,
        caption_column=getattr(args, "caption_column", None) or "caption",
    )


def print_summary(result: ScoreResult) -> None:
    from recipe_lib.stages.score import scoring_lines

    print("\n".join(scoring_lines(result)))


def run(args: argparse.Namespace) -> int:
    from recipe_lib.prompts import load_prompt
    from recipe_lib.stages.score import ScoreStageConfig, run_score
    from recipe_lib.tasks import parse_tasks

    prompts = {t: p for t, p in (("sa", args.sa_prompt), ("rule", args.rule_prompt)) if p}
    for prompt in prompts.values():
        load_prompt(prompt)  # a bad prompt file is reported before any model is built or loaded
    from recipe_lib.stages.score import check_calibration_option

    check_calibration_option(args.calibration, args.mode)  # before the critic is built or loaded
    stage = ScoreStageConfig(
        score=score_config(args),
        threshold=args.threshold,
        report=args.report,
        report_title=args.report_title,
        label_column=args.label_column or "pc",
        tasks=parse_tasks(args.task),
        keep_on=args.keep_on,
        sa_column=args.sa_column,
        prompts=prompts,
        calibration=getattr(args, "calibration", None),
    )
    result = run_score(stage)
    print("\n".join(result.summary_lines()))
    if not result.ok:
        print("error: nothing was scored; see the skipped clips above", file=sys.stderr)
        return 1
    return 0
