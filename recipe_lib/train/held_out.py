"""Scoring held-out conversations with the model in memory, during training (SFT and GRPO alike).

Each sample is scored the way ``plausibility score --mode expected`` scores a clip
(:class:`recipe_lib.inference.hf.HFScorer`: p(1..5) of the digit after the answer prefix, score = argmax), with the
prompt text of the sample's own conversation; accuracy / Pearson / the majority baseline go to ``eval.jsonl``.

A conversation names no prompt file, so the answer prefix comes from the samples' own answers: the text before the
score digit (``<answer>\\n`` for the tagged prompts, nothing for a prompt answered with the digit alone, such as
``cosmos_reason2``). Samples without answers (GRPO datasets) use the tagged prompts' prefix, ``<answer>\\n``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import numpy as np

from recipe_lib.evaluation.metrics import core_metrics
from recipe_lib.train.batching import ClipCache, Encoder, Sample
from recipe_lib.train.model import TrainModel, eval_mode


@dataclasses.dataclass
class HeldOutScores:
    """Scores of held-out samples: one row per sample (label, score, expected score, p(1..5)) and core metrics."""

    step: int
    rows: list[dict[str, Any]]
    metrics: dict[str, Any]
    skipped: list[dict[str, Any]]


def answer_prefix_of(samples: list[Sample]) -> str:
    """The text the samples' answers put before their score digit (see the module docstring); answers that disagree
    are a :class:`DataError`, since one prefix scores them all."""
    from recipe_lib.errors import DataError
    from recipe_lib.prompts import ANSWER_PREFIX

    prefixes: dict[str, int] = {}
    for s in samples:
        if s.answer is None:
            continue
        match = re.search(r"[1-5]", s.answer)
        if match is None:
            continue
        prefix = s.answer[: match.start()]
        if "</think>" in prefix:  # a reasoning target: the prefix is what follows the reasoning
            prefix = prefix[prefix.rindex("</think>") + len("</think>") :].lstrip()
        prefixes.setdefault(prefix, s.index)
    if not prefixes:
        return ANSWER_PREFIX
    if len(prefixes) > 1:
        shown = ", ".join(f"{p!r} (sample {i})" for p, i in list(prefixes.items())[:3])
        raise DataError(
            f"the held-out answers put different text before their score: {shown}",
            hint="build the evaluation conversations with one prompt file",
        )
    return next(iter(prefixes))


def evaluate_samples(
    tm: TrainModel,
    encoder: Encoder,
    samples: list[Sample],
    cache: ClipCache,
    batch_size: int = 8,
    step: int = 0,
) -> HeldOutScores:
    """Score ``samples`` with the model in memory, in ``expected`` mode (see the module docstring)."""
    from recipe_lib.config import SamplingSettings
    from recipe_lib.inference.hf import HFScorer, Prepared
    from recipe_lib.models.loading import LoadedCritic
    from recipe_lib.prompts import PromptSpec

    critic = LoadedCritic(model=tm.model, processor=tm.processor, name="training", device=tm.device, dtype=tm.dtype)
    prefix = answer_prefix_of(samples)
    # The prompt text comes from each sample's own conversation; the scorer's prompt only carries the prefix.
    spec = PromptSpec("conversation", "-", "-", answer_prefix=prefix)
    scorer = HFScorer(critic, spec, samples[0].video_settings, SamplingSettings())
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    with eval_mode(tm.model):
        for i in range(0, len(samples), batch_size):
            kept, clips, bad = cache.fetch(samples[i : i + batch_size])
            skipped.extend(bad)
            if not kept:
                continue
            prepared = [
                Prepared(
                    item={"index": s.index, "video_url": s.video, "pc": s.reference},
                    text=encoder.prompt_text(s, prefix),
                    video=c,
                    preprocess_s=0.0,
                )
                for s, c in zip(kept, clips)
            ]
            for p, row in zip(prepared, scorer.score_batch(prepared)):
                rows.append(
                    {
                        "index": p.item["index"],
                        "video": p.item["video_url"],
                        "label": p.item["pc"],
                        "score": row["score"],
                        "expected_score": row["expected_score"],
                        "probs": row["probs"],
                        "digit_mass": row["digit_mass"],
                    }
                )
    encoder.tokenizer.padding_side = "left"
    labelled = [r for r in rows if r["label"] is not None]
    metrics = core_metrics([r["label"] for r in labelled], [r["score"] for r in labelled]).to_dict() if labelled else {}
    if labelled:
        metrics["mean_digit_mass"] = float(np.mean([r["digit_mass"] for r in labelled]))
        expected = [r["expected_score"] for r in labelled]
        metrics["pearson_expected"] = core_metrics([r["label"] for r in labelled], expected).pearson
        if isinstance(metrics["pearson_expected"], float) and math.isnan(metrics["pearson_expected"]):
            metrics["pearson_expected"] = None
    return HeldOutScores(step=step, rows=rows, metrics=metrics, skipped=skipped)
