"""``plausibility score VIDEOS... --out DIR``: score clips with the critic (resumable), write the per-video files, a
keep/reject manifest at ``--threshold`` and an HTML report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from recipe_lib.commands._common import (
    add_config_args,
    add_profile_args,
    add_sampling_args,
    add_video_args,
    config_from_args,
    sampling_flags,
    video_flags,
)
from recipe_lib.inference.score_config import EndpointOptions, ScoreConfig, VLLMOptions

if TYPE_CHECKING:
    from recipe_lib.inference.score_config import ScoreResult


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
    """What each clip is scored for (recipe_lib.tasks) and the columns the tasks read. ``--task`` (a comma list, read
    into ``ScoreStageConfig.tasks``) and the per-task prompts (into ``ScoreStageConfig.prompts``) are written here; the
    columns come from the configs' fields."""
    from recipe_lib.stages.score import ScoreStageConfig

    g = p.add_argument_group("tasks")
    g.add_argument(
        "--task",
        default="pc",
        help="pc (physics, default), sa (semantic adherence to the caption), rule (one judgement per listed physical "
        "rule), or a comma list such as pc,sa (joint is then computed)",
    )
    add_config_args(g, ScoreConfig, only=("caption_column",))
    add_config_args(g, ScoreStageConfig, only=("sa_column",))
    g.add_argument("--sa-prompt", default=None, help="task sa: prompt YAML (default: prompts/semantic_adherence.yaml)")
    g.add_argument("--rule-prompt", default=None, help="task rule: prompt YAML (default: prompts/physical_rule.yaml)")


# ScoreConfig fields offered as options, in the order --help lists them.
SCORING_FIELDS = (
    "model", "prompt", "mode", "batch_size", "device", "dtype", "precision", "vision_path", "split", "limit",
    "use_caption", "workers",
    "max_batch_tokens", "download_cache", "download_deadline", "backend", "trust_remote_code",
)  # fmt: skip
SCALE_FIELDS = ("engine", "address", "num_workers", "gpus_per_worker")
# Fields whose default, when the option is left out, is the profile's.
PROFILE_FIELDS = ("model", "batch_size", "device", "dtype")


def add_scoring_args(p: argparse.ArgumentParser) -> None:
    """Critic, prompt, mode, batching and video/sampling options shared by the commands that score clips: one option
    per field of :class:`ScoreConfig` (and of its vLLM / endpoint options), built from the fields' types, defaults
    and help texts."""
    add_profile_args(p)
    unset = dict.fromkeys(PROFILE_FIELDS)
    add_config_args(
        p,
        ScoreConfig,
        only=SCORING_FIELDS,
        defaults=unset,
        notes=dict.fromkeys(PROFILE_FIELDS[1:], "default: the profile's"),
    )
    add_config_args(p.add_argument_group("vLLM engine (--backend vllm)"), VLLMOptions)
    add_config_args(p.add_argument_group("served endpoint (--backend openai)"), EndpointOptions)
    add_config_args(p.add_argument_group("scaling out"), ScoreConfig, only=SCALE_FIELDS)
    add_video_args(p)
    add_sampling_args(p)


def add_filter_args(p: argparse.ArgumentParser) -> None:
    """Keep/reject and report options: fields of :class:`~recipe_lib.stages.score.ScoreStageConfig`."""
    from recipe_lib.stages.score import ScoreStageConfig

    add_config_args(
        p.add_argument_group("filtering and report"),
        ScoreStageConfig,
        only=("threshold", "report", "report_title", "label_column", "keep_on", "calibration"),
        defaults={"label_column": None},  # left out: pc, and a table without it is not an error
        notes={"label_column": "default: pc"},
    )


def score_config(args: argparse.Namespace) -> ScoreConfig:
    """The scoring stage's config from the shared arguments (used by score, rank and calibrate)."""
    from recipe_lib.profiles import get_profile
    from recipe_lib.prompts import load_prompt

    load_prompt(args.prompt)  # a bad prompt file is reported before any model is built or loaded
    profile = get_profile(args.profile)
    label_column = getattr(args, "label_column", None)
    return config_from_args(
        ScoreConfig,
        args,
        renames={"inputs": "videos", "out_dir": "out"},
        model=profile.critic(args.model),
        batch_size=args.batch_size or profile.batch_size,
        device=args.device or profile.device,
        dtype=args.dtype or profile.dtype,
        video_overrides=video_flags(args),
        sampling_overrides=sampling_flags(args),
        vllm=config_from_args(VLLMOptions, args),
        endpoint=config_from_args(EndpointOptions, args),
        label_column=label_column or "pc",
        require_label_column=label_column is not None,
        task="pc",  # the stage sets each task's own
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
    stage = config_from_args(
        ScoreStageConfig,
        args,
        score=score_config(args),
        label_column=args.label_column or "pc",
        tasks=parse_tasks(args.task),
        prompts=prompts,
    )
    result = run_score(stage)
    print("\n".join(result.summary_lines()))
    if not result.ok:
        print("error: nothing was scored; see the skipped clips above", file=sys.stderr)
        return 1
    return 0
