"""Supervised fine-tuning of a video critic in this process (CPU or one GPU), on a conversation dataset.

``train_sft(SFTConfig) -> SFTResult``. The TOML keys are cosmos-rl's (``recipe_lib.train.config``), so one file
drives this loop for a rehearsal and cosmos-rl for the multi-GPU run.

What one optimizer step does: take ``train.train_batch_per_replica`` samples — a seeded per-epoch permutation, or
with ``[local] batch_order = "balanced"`` batches that hold every label in equal shares (:func:`balanced_batches`) —
run them in micro-batches of ``train.train_policy.mini_batch`` (gradient accumulation), with the cross-entropy on
the assistant answer tokens only (``<answer>\\nN\\n</answer><|im_end|>``; see :mod:`recipe_lib.train.batching`)
averaged over all answer tokens of the step, clip the gradient norm to ``optm_grad_norm_clip``, and step AdamW with
cosmos-rl's warm-up / decay schedule (:func:`recipe_lib.train.common.lr_factor`).

Evaluation: every ``validation.freq`` steps (and after the last) when ``validation.enable``, the held-out
``custom.eval_dataset`` is scored the way ``plausibility score --mode expected`` scores a clip
(:class:`recipe_lib.inference.hf.HFScorer`: p(1..5) of the digit after ``<answer>\\n``, score = argmax), on the model
in memory, and accuracy / Pearson / the majority baseline go to ``eval.jsonl`` and TensorBoard.

Checkpoints every ``train.ckpt.save_freq`` steps, the newest ``max_keep`` kept, plus ``final/``; a killed run resumes
from the newest one when started again with the same settings (:mod:`recipe_lib.train.common`).

Why not TRL: TRL (1.x on PyPI; not a dependency here) wires only the ``image`` / ``images`` columns of a dataset
through to a vision-language processor. Qwen2.5-VL *video* inputs (``pixel_values_videos``, ``video_grid_thw``,
per-clip fps) do not reach the model in its GRPO trainer — open feature requests huggingface/trl#4144 and #5373, where
a maintainer confirmed in 2026-07 that only the image keys are passed — and for SFT its vision collator would have to
be replaced by one that decodes clips with per-sample video settings and labels only the answer, which is most of what
a trainer does here. So both trainers are a plain torch loop over the ``transformers`` model: one batching module
(answer-only labels, per-sample video settings, cached clips) and one checkpoint format serve SFT and GRPO, and
nothing beyond torch, transformers and (for LoRA) peft is needed.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from recipe_lib.config import to_dict
from recipe_lib.errors import DataError
from recipe_lib.metrics import core_metrics
from recipe_lib.train.batching import ClipCache, Encoder, Sample, load_samples, samples_digest, to_device
from recipe_lib.train.common import (
    Logger,
    RunFolder,
    Timer,
    TrainModel,
    build_optimizer,
    build_scheduler,
    eval_mode,
    load_train_model,
    local_extras,
    progress_enabled,
    resolve_path,
    restore_trainer_state,
    rng_state,
    run_settings,
    save_checkpoint,
    seed_everything,
)
from recipe_lib.train.config import SFTConfig

DEFAULT_CLIP_CACHE_BYTES = 2 << 30


@dataclasses.dataclass
class EvalResult:
    """Scores of held-out samples: one row per sample (label, score, expected score, p(1..5)) and core metrics."""

    step: int
    rows: list[dict[str, Any]]
    metrics: dict[str, Any]
    skipped: list[dict[str, Any]]


@dataclasses.dataclass
class SFTResult:
    run_dir: Path
    final_dir: Path
    steps: int
    total_steps: int
    checkpoints: list[tuple[int, Path]]
    history: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    resumed_from: int | None
    trained_steps_now: int
    seconds: float

    def summary(self) -> dict[str, Any]:
        last = self.evals[-1] if self.evals else {}
        losses = [h["loss"] for h in self.history if h.get("loss") is not None]
        return {
            "run_dir": str(self.run_dir),
            "final_dir": str(self.final_dir),
            "steps": self.steps,
            "resumed_from": self.resumed_from,
            "trained_steps_now": self.trained_steps_now,
            "checkpoints": [s for s, _ in self.checkpoints],
            "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "eval_accuracy": last.get("accuracy"),
            "eval_pearson": last.get("pearson"),
            "skipped": len(self.skipped),
            "seconds": round(self.seconds, 2),
        }


# ---------------------------------------------------------------------------------------------------------------------
# evaluation on the model in memory


def evaluate_samples(
    tm: TrainModel,
    encoder: Encoder,
    samples: list[Sample],
    cache: ClipCache,
    batch_size: int = 8,
    step: int = 0,
) -> EvalResult:
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
    return EvalResult(step=step, rows=rows, metrics=metrics, skipped=skipped)


# ---------------------------------------------------------------------------------------------------------------------
# training


def steps_per_epoch(n_samples: int, batch: int) -> int:
    """Optimizer steps in one pass over the data (a last partial batch is dropped when a full one exists)."""
    return max(1, n_samples // batch)


def epoch_order(n: int, epoch: int, seed: int, shuffle: bool) -> np.ndarray:
    """The sample order of one epoch: a permutation seeded by (seed, epoch), so a resumed run sees the same order."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_for_step(step: int, n: int, batch: int, seed: int, shuffle: bool) -> list[int]:
    per_epoch = steps_per_epoch(n, batch)
    epoch, pos = divmod(step, per_epoch)
    order = epoch_order(n, epoch, seed, shuffle)
    size = min(batch, n)
    return [int(i) for i in order[pos * size : pos * size + size]]


def balanced_batches(labels: list[Any], total_steps: int, batch: int, seed: int) -> list[list[int]]:
    """Batches in which every label has an equal share (round-robin over the labels, rotating which label gets the
    remainder). Each label's samples are drawn in seeded permutations, reshuffled when used up, so rare labels are
    repeated more often. Deterministic in (labels, seed): a resumed run continues the same sequence."""
    rng = np.random.default_rng([seed, 7])
    pools: dict[Any, list[int]] = {}
    for i, label in enumerate(labels):
        pools.setdefault(label, []).append(i)
    keys = sorted(pools, key=str)
    queues: dict[Any, list[int]] = {k: [] for k in keys}
    out = []
    for step in range(total_steps):
        chosen = []
        for slot in range(batch):
            key = keys[(slot + step) % len(keys)]
            if not queues[key]:
                queues[key] = [int(i) for i in rng.permutation(pools[key])]
            chosen.append(queues[key].pop())
        out.append(chosen)
    return out


def total_steps_of(cfg: SFTConfig, n_samples: int) -> int:
    total = cfg.train.epoch * steps_per_epoch(n_samples, cfg.train.train_batch_per_replica)
    if cfg.local.max_steps is not None:
        total = min(total, cfg.local.max_steps)
    return total


def _result_from_run(run: RunFolder, total: int, resumed: int | None, now: int, timer: Timer) -> SFTResult:
    history = run.read_jsonl("history.jsonl")
    evals = run.read_jsonl("eval.jsonl")
    skipped = run.read_jsonl("skipped.jsonl")
    steps = history[-1]["step"] if history else 0
    return SFTResult(
        run_dir=run.root,
        final_dir=run.final,
        steps=steps,
        total_steps=total,
        checkpoints=run.step_checkpoints(),
        history=history,
        evals=evals,
        skipped=skipped,
        resumed_from=resumed,
        trained_steps_now=now,
        seconds=timer(),
    )


def train_sft(cfg: SFTConfig, progress: bool = True, restart: bool | str = False) -> SFTResult:
    """Run (or resume, or return the finished) SFT run described by ``cfg``; see the module docstring.

    ``restart``: False resumes a run of the same settings and refuses other settings in ``train.output_dir``;
    ``"changed"`` discards the folder's run only when its settings (or data) differ; True always starts afresh.
    """
    import torch
    from tqdm.auto import tqdm

    timer = Timer()
    progress = progress_enabled(progress)
    if not cfg.custom.dataset.path:
        raise DataError("custom.dataset.path is empty", hint="point it at a conversation dataset (kind 'sft')")

    column = cfg.train.train_policy.conversation_column_name
    overrides = cfg.custom.vision.overrides()
    train_samples, skipped = load_samples(resolve_path(cfg.custom.dataset.path), True, column, overrides)
    eval_samples: list[Sample] = []
    if cfg.validation.enable:
        if cfg.custom.eval_dataset is None or not cfg.custom.eval_dataset.path:
            raise DataError(
                "validation.enable is true but there is no [custom.eval_dataset] path",
                hint="give an eval conversation dataset or set validation.enable = false",
            )
        eval_samples, eval_skipped = load_samples(resolve_path(cfg.custom.eval_dataset.path), True, column, overrides)
        skipped += [{**s, "split": "eval"} for s in eval_skipped]
    run = RunFolder(resolve_path(cfg.train.output_dir))
    digests = {"train": samples_digest(train_samples)}
    if eval_samples:
        digests["eval"] = samples_digest(eval_samples)
    run.claim(run_settings(cfg, digests), restart=restart)
    n = len(train_samples)
    batch = cfg.train.train_batch_per_replica
    mini = min(cfg.train.train_policy.mini_batch, batch)
    total = total_steps_of(cfg, n)
    if run.finished(total):
        return _result_from_run(run, total, None, 0, timer)

    seed = cfg.train.seed if cfg.train.seed is not None else 0
    seed_everything(seed)
    latest = run.latest()
    resume_from = latest[1] if latest is not None else None
    tm = load_train_model(
        cfg.policy.model_name_or_path, cfg.local, cfg.policy.model_gradient_checkpointing, resume_from
    )
    encoder = Encoder(tm.processor)
    optimizer = build_optimizer(tm.trainable_parameters(), cfg.train)
    scheduler = build_scheduler(optimizer, total, cfg.train)
    start = restore_trainer_state(resume_from, optimizer, scheduler, run)
    logger = Logger(run, cfg.local.tensorboard_dir, start)
    cache = ClipCache(DEFAULT_CLIP_CACHE_BYTES, workers=max(2, cfg.local.num_workers))
    skipped += cache.warm(train_samples + eval_samples, progress=progress)
    run.write_skipped(skipped)
    bad = {s["index"] for s in skipped if s.get("split") != "eval" and "video" in s}
    usable = [s for s in train_samples if s.index not in bad]
    if not usable:
        raise DataError("no training sample has a readable clip", hint="see skipped.jsonl in the run folder")
    if len(usable) != n:  # the data order is defined over the readable samples
        train_samples, n = usable, len(usable)
        total = total_steps_of(cfg, n)

    dtype = tm.base().dtype
    params = tm.trainable_parameters()
    ckpt = cfg.train.ckpt
    eval_every = cfg.validation.freq
    balanced = local_extras(cfg)["batch_order"] == "balanced"
    if balanced:
        if any(s.reference is None for s in train_samples):
            raise DataError(
                "local.batch_order = 'balanced' needs a label on every sample (a 'reference' or 'pc' column)"
            )
        plan = balanced_batches([s.reference for s in train_samples], total, min(batch, n), cfg.train.seed or 0)
    eval_batch = cfg.validation.batch_size or mini
    shuffle = cfg.train.train_policy.dataloader_shuffle
    data_seed = cfg.train.train_policy.dataloader_seed

    def state_dict(step: int) -> dict[str, Any]:
        return {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            "step": step,
            "kind": "sft",
        }

    def run_eval(step: int) -> None:
        if not eval_samples:
            return
        result = evaluate_samples(tm, encoder, eval_samples, cache, eval_batch, step)
        logger.log(step, result.metrics, file="eval.jsonl", prefix="eval")

    bar = tqdm(total=total, initial=start, desc="sft", unit="step", disable=not progress)
    tm.model.train()
    for step in range(start, total):
        step_timer = Timer()
        indices = plan[step] if balanced else batch_for_step(step, n, batch, data_seed, shuffle)
        kept, clips, bad_now = cache.fetch([train_samples[i] for i in indices])
        if bad_now:  # a clip that became unreadable since the run started
            skipped += bad_now
            run.write_skipped(skipped)
        n_tokens = 0
        encoded = []
        for j in range(0, len(kept), mini):
            inputs, targets, mask = encoder.encode_sft(kept[j : j + mini], clips[j : j + mini])
            encoded.append((inputs, targets, mask))
            n_tokens += int(mask.sum())
        loss_sum, correct = 0.0, 0
        for inputs, targets, mask in encoded:
            inputs = to_device(inputs, tm.device, dtype)
            out = tm.model(**inputs, use_cache=False, logits_to_keep=targets.shape[1] + 1)
            logits = out.logits[:, :-1, :].float()
            targets = targets.to(logits.device)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
            )
            (loss / max(n_tokens, 1)).backward()
            loss_sum += float(loss.detach())
            correct += int(((logits.argmax(-1) == targets) & mask.to(logits.device)).sum())
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.train.optm_grad_norm_clip))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        done = step + 1
        scalars = {
            "loss": loss_sum / max(n_tokens, 1),
            "token_accuracy": correct / max(n_tokens, 1),
            "lr": lr,
            "grad_norm": grad_norm,
            "samples": len(kept),
            "seconds": step_timer(),
        }
        if done % cfg.local.log_every == 0 or done == total:
            logger.log(done, scalars)
        bar.update(1)
        bar.set_postfix(loss=f"{scalars['loss']:.3f}")
        if eval_samples and done % eval_every == 0 and done != total:
            run_eval(done)
        if ckpt.enable_checkpoint and done % ckpt.save_freq == 0 and done != total:
            save_checkpoint(run, tm, f"step_{done:06d}", state_dict(done), {"step": done, "kind": "sft"}, ckpt.max_keep)
    bar.close()
    if eval_samples:
        run_eval(total)
    if ckpt.enable_checkpoint and total % ckpt.save_freq == 0:
        save_checkpoint(run, tm, f"step_{total:06d}", state_dict(total), {"step": total, "kind": "sft"}, ckpt.max_keep)
    save_checkpoint(run, tm, "final", state_dict(total), {"step": total, "kind": "sft", "config": to_dict(cfg)})
    logger.close()
    return _result_from_run(run, total, start or None, total - start, timer)
