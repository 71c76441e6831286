"""Scoring held-out conversations with the model in memory, during training (SFT and GRPO alike).

Each sample is scored the way ``plausibility score --mode expected`` scores a clip
(:class:`recipe_lib.inference.hf.HFScorer`: p(1..5) of the digit after ``<answer>\\n``, score = argmax), with the
prompt text of the sample's own conversation; accuracy / Pearson / the majority baseline go to ``eval.jsonl``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from recipe_lib.metrics import core_metrics
from recipe_lib.train.batching import ClipCache, Encoder, Sample
from recipe_lib.train.model import TrainModel, eval_mode


@dataclasses.dataclass
class HeldOutScores:
    """Scores of held-out samples: one row per sample (label, score, expected score, p(1..5)) and core metrics."""

    step: int
    rows: list[dict[str, Any]]
    metrics: dict[str, Any]
    skipped: list[dict[str, Any]]


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
    from recipe_lib.prompts import ANSWER_PREFIX, PromptSpec

    critic = LoadedCritic(model=tm.model, processor=tm.processor, name="training", device=tm.device, dtype=tm.dtype)
    # The prompt text comes from each sample's own conversation; the scorer's prompt is not used here.
    scorer = HFScorer(critic, PromptSpec("conversation", "-", "-"), samples[0].video_settings, SamplingSettings())
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
                    text=encoder.prompt_text(s, ANSWER_PREFIX),
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
