"""The one training loop both in-process trainers run: ``run_training(cfg, algorithm) -> TrainResult``.

The loop owns everything that is not the learning rule: loading and checking the conversation datasets, claiming the
run folder (a rerun with other settings is refused or restarted), decoding every clip once into a cache (unreadable
ones are recorded in ``skipped.jsonl`` and left out), the data order (seeded shuffle or label-balanced batches,
:mod:`recipe_lib.train.data_order`), the model (optionally with LoRA), AdamW and cosmos-rl's schedule, resuming from
the newest checkpoint after a kill, logging every ``local.log_every`` steps, evaluating the held-out set every
``validation.freq`` steps and after the last, and checkpoints every ``train.ckpt.save_freq`` steps plus ``final/``
(none at all with ``train.ckpt.enable_checkpoint = false``, as in cosmos-rl: a run that only times its steps). Under
LoRA a checkpoint is the adapter; ``local.lora.merge_final`` writes the merged model once, at the end. Before the
first step it refuses a run whose checkpoint the disk cannot hold, or whose mode cannot fit the GPU's memory
(:mod:`recipe_lib.train.capacity`); CUDA running out of memory in a step is one error naming the settings that need
less. On a GPU every logged step records its peak memory (``gpu_peak_bytes``).

An :class:`Algorithm` (:class:`recipe_lib.train.sft.SFT`, :class:`recipe_lib.train.grpo.GRPO`) supplies the learning
rule: how many samples one step takes and what a step does with them (forward, backward and one or more calls of
:meth:`TrainContext.optimizer_step`), returning the step's scalars.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from recipe_lib.config import resolve_path, to_dict
from recipe_lib.errors import DataError
from recipe_lib.progress import progress_bar, progress_enabled
from recipe_lib.train.batching import ClipCache, Encoder, Sample, load_samples, samples_digest
from recipe_lib.train.capacity import (
    check_disk,
    check_memory,
    checkpoint_parts,
    footprint,
    lora_parameter_count,
    out_of_memory_error,
)
from recipe_lib.train.checkpoint import (
    merge_checkpoint,
    restore_trainer_state,
    rng_state,
    save_checkpoint,
    save_merged,
    seed_everything,
)
from recipe_lib.train.data_order import balanced_batches, batch_for_step, steps_per_epoch
from recipe_lib.train.held_out import evaluate_samples
from recipe_lib.train.logger import Logger, Timer
from recipe_lib.train.model import TrainModel, load_train_model
from recipe_lib.train.optim import build_optimizer, build_scheduler
from recipe_lib.train.run_folder import EVALS, HISTORY, SKIPPED, RunFolder, run_settings

DEFAULT_CLIP_CACHE_BYTES = 2 << 30


@dataclasses.dataclass
class TrainContext:
    """What a training step may use: the config, the model and its optimizer, the encoder and the clip cache."""

    cfg: Any
    tm: TrainModel
    encoder: Encoder
    cache: ClipCache
    run: RunFolder
    optimizer: Any
    scheduler: Any
    start: int
    total: int
    step: int = 0

    @property
    def dtype(self) -> Any:
        return self.tm.base().dtype

    def optimizer_step(self) -> float:
        """Clip the gradient norm, step AdamW and the schedule, clear the gradients; returns the gradient norm."""
        import torch

        params = self.tm.trainable_parameters()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.train.optm_grad_norm_clip))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return grad_norm


class Algorithm(Protocol):
    """The learning rule the loop runs (see the module docstring)."""

    kind: str  # "sft" | "grpo": the checkpoints' ``kind`` and the progress bar's label
    require_answer: bool  # samples must carry an assistant answer
    require_labels: bool  # every sample needs a label (``reference``)
    progress_key: str  # the scalar shown on the progress bar

    def samples_per_step(self, cfg: Any) -> int: ...

    def optimizer_steps_per_step(self, cfg: Any) -> int: ...

    def eval_batch_size(self, cfg: Any) -> int: ...

    def setup(self, ctx: TrainContext, resumed: bool) -> None: ...

    def step(self, ctx: TrainContext, samples: list[Sample], clips: list[Any]) -> dict[str, Any]: ...


@dataclasses.dataclass
class TrainResult:
    """What a run left in its folder: the logs, the checkpoints, and what this call trained."""

    kind: str
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
    merged_dir: Path | None = None  # LoRA with local.lora.merge_final: the merged model

    @classmethod
    def read(cls, kind: str, run: RunFolder, total: int, resumed: int | None, now: int, seconds: float) -> TrainResult:
        history = run.read_jsonl(HISTORY)
        return cls(
            kind=kind,
            run_dir=run.root,
            final_dir=run.final,
            steps=history[-1]["step"] if history else 0,
            total_steps=total,
            checkpoints=run.step_checkpoints(),
            history=history,
            evals=run.read_jsonl(EVALS),
            skipped=run.read_jsonl(SKIPPED),
            resumed_from=resumed,
            trained_steps_now=now,
            seconds=seconds,
            merged_dir=run.merged if (run.merged / "config.json").is_file() else None,
        )

    def curve(self, key: str) -> list[float]:
        return [h[key] for h in self.history if h.get(key) is not None]

    def window_mean(self, key: str, part: str, fraction: float = 0.1) -> float | None:
        """Mean of ``key`` over the first or last ``fraction`` of the logged steps (at least one step)."""
        values = self.curve(key)
        if not values:
            return None
        k = max(1, int(round(len(values) * fraction)))
        chunk = values[:k] if part == "first" else values[-k:]
        return float(np.mean(chunk))

    def _mean(self, key: str) -> float | None:
        values = self.curve(key)
        return float(np.mean(values)) if values else None

    def summary(self) -> dict[str, Any]:
        """The run in one flat dict; reward keys appear for runs that log rewards (GRPO)."""
        last = self.evals[-1] if self.evals else {}
        losses = self.curve("loss")
        out: dict[str, Any] = {
            "kind": self.kind,
            "run_dir": str(self.run_dir),
            "final_dir": str(self.final_dir),
            "merged_dir": str(self.merged_dir) if self.merged_dir else None,
            "steps": self.steps,
            "resumed_from": self.resumed_from,
            "trained_steps_now": self.trained_steps_now,
            "checkpoints": [s for s, _ in self.checkpoints],
            "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "eval_accuracy": last.get("accuracy"),
            "eval_pearson": last.get("pearson"),
        }
        if self.curve("reward_mean"):
            out.update(
                reward_first=self.window_mean("reward_mean", "first"),
                reward_last=self.window_mean("reward_mean", "last"),
                signal_fraction=self._mean("signal_fraction"),
                parsed_first=self.window_mean("parsed_fraction", "first"),
                parsed_last=self.window_mean("parsed_fraction", "last"),
                reward_parsed_first=self.window_mean("reward_parsed", "first"),
                reward_parsed_last=self.window_mean("reward_parsed", "last"),
                kl_last=self.window_mean("kl", "last"),
                clip_fraction=self._mean("clip_fraction"),
            )
        out.update(skipped=len(self.skipped), seconds=round(self.seconds, 2))
        return out


def _load_data(cfg: Any, algo: Algorithm) -> tuple[list[Sample], list[Sample], list[dict[str, Any]]]:
    kind = algo.kind.upper()
    if not cfg.custom.dataset.path:
        raise DataError("custom.dataset.path is empty", hint=f"point it at a conversation dataset (kind '{algo.kind}')")
    column = getattr(cfg.train.train_policy, "conversation_column_name", "conversations")
    overrides = cfg.custom.vision.overrides()
    samples, skipped = load_samples(resolve_path(cfg.custom.dataset.path), algo.require_answer, column, overrides)
    missing_label = [s.index for s in samples if s.reference is None]
    if missing_label and (algo.require_labels or cfg.local.batch_order == "balanced"):
        why = "" if algo.require_labels else " (local.batch_order = 'balanced' needs a label on every sample)"
        raise DataError(
            f"{len(missing_label)} {kind} sample(s) have no label (first: row {missing_label[0]}){why}",
            hint="the dataset needs a 'reference' (or 'pc') column with scores 1-5",
        )
    eval_samples: list[Sample] = []
    if cfg.validation.enable:
        if cfg.custom.eval_dataset is None or not cfg.custom.eval_dataset.path:
            raise DataError(
                "validation.enable is true but there is no [custom.eval_dataset] path",
                hint="give an eval conversation dataset or set validation.enable = false",
            )
        path = resolve_path(cfg.custom.eval_dataset.path)
        eval_samples, eval_skipped = load_samples(path, algo.require_answer, column, overrides)
        skipped += [{**s, "split": "eval"} for s in eval_skipped]
    return samples, eval_samples, skipped


def total_steps(cfg: Any, n_samples: int, per_step: int) -> int:
    total = cfg.train.epoch * steps_per_epoch(n_samples, per_step)
    if cfg.local.max_steps is not None:
        total = min(total, cfg.local.max_steps)
    return total


def run_training(cfg: Any, algo: Algorithm, progress: bool = True, restart: bool | str = False) -> TrainResult:
    """Run (or resume, or return the finished) run of ``cfg`` with ``algo``; see the module docstring.

    ``restart``: False resumes a run of the same settings and refuses other settings in ``train.output_dir``;
    ``"changed"`` discards the folder's run only when its settings (or data) differ; True always starts afresh.
    """

    timer = Timer()
    progress = progress_enabled(progress)
    per_step = algo.samples_per_step(cfg)
    samples, eval_samples, skipped = _load_data(cfg, algo)
    run = RunFolder(resolve_path(cfg.train.output_dir))
    digests = {"train": samples_digest(samples)}
    if eval_samples:
        digests["eval"] = samples_digest(eval_samples)
    run.claim(run_settings(cfg, digests), restart=restart)
    total = total_steps(cfg, len(samples), per_step)
    if run.finished(total):
        if cfg.local.lora.enable and cfg.local.lora.merge_final and not (run.merged / "config.json").is_file():
            merge_checkpoint(run.final, run.merged, device=cfg.local.device, dtype=cfg.local.dtype)
        return TrainResult.read(algo.kind, run, total, None, 0, timer())

    # Decode every clip once; the data order is defined over the readable samples.
    cache = ClipCache(DEFAULT_CLIP_CACHE_BYTES, workers=max(2, cfg.local.num_workers))
    skipped += cache.warm(samples + eval_samples, progress=progress)
    run.write_skipped(skipped)
    bad = {s["index"] for s in skipped if s.get("split") != "eval" and "video" in s}
    if bad:
        samples = [s for s in samples if s.index not in bad]
        if not samples:
            raise DataError(
                f"no {algo.kind.upper()} training sample has a readable clip",
                hint="see skipped.jsonl in the run folder",
            )
        total = total_steps(cfg, len(samples), per_step)

    seed = cfg.train.seed if cfg.train.seed is not None else 0
    seed_everything(seed)
    latest = run.latest()
    resume_from = latest[1] if latest is not None else None
    tm = load_train_model(
        cfg.policy.model_name_or_path, cfg.local, cfg.policy.model_gradient_checkpointing, resume_from
    )
    check_capacity(cfg, tm, run, algo.kind)
    optimizer = build_optimizer(tm.trainable_parameters(), cfg.train)
    scheduler = build_scheduler(optimizer, total * algo.optimizer_steps_per_step(cfg), cfg.train)
    start = restore_trainer_state(resume_from, optimizer, scheduler, run)
    encoder = Encoder(tm.processor, memo_bytes=cfg.local.encoding_memo_mib << 20)
    ctx = TrainContext(cfg, tm, encoder, cache, run, optimizer, scheduler, start, total)
    algo.setup(ctx, resumed=resume_from is not None)
    logger = Logger(run, cfg.local.tensorboard_dir, start)

    n = len(samples)
    policy = cfg.train.train_policy
    plan = None
    if cfg.local.batch_order == "balanced":
        plan = balanced_batches([s.reference for s in samples], total, min(per_step, n), seed)
    ckpt = cfg.train.ckpt

    def checkpoint(name: str, step: int, keep: int | None, **info: Any) -> None:
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            "step": step,
            "kind": algo.kind,
        }
        save_checkpoint(run, tm, name, state, {"step": step, "kind": algo.kind, **info}, keep)

    def evaluate(step: int) -> None:
        if eval_samples:
            with gpu_memory(cfg, tm, step, algo.kind):
                result = evaluate_samples(tm, ctx.encoder, eval_samples, cache, algo.eval_batch_size(cfg), step)
            logger.log(step, result.metrics, file=EVALS, prefix="eval")

    bar = progress_bar(total=total, initial=start, desc=algo.kind, unit="step", enabled=progress)
    tm.model.train()
    for step in range(start, total):
        step_timer = Timer()
        ctx.step = step
        if plan is not None:
            indices = plan[step]
        else:
            indices = batch_for_step(step, n, per_step, policy.dataloader_seed, policy.dataloader_shuffle)
        kept, clips, bad_now = cache.fetch([samples[i] for i in indices])
        if bad_now:  # a clip that became unreadable since the run started
            skipped += bad_now
            run.write_skipped(skipped)
        if not kept:
            continue
        lr = scheduler.get_last_lr()[0]
        done = step + 1
        with gpu_memory(cfg, tm, done, algo.kind) as peak:
            scalars = algo.step(ctx, kept, clips)
        scalars = {**scalars, "lr": lr, "seconds": step_timer(), **peak}
        if done % cfg.local.log_every == 0 or done == total:
            logger.log(done, scalars)
        bar.update(1)
        bar.set_postfix({algo.progress_key: f"{scalars[algo.progress_key]:.3f}"})
        if done % cfg.validation.freq == 0 and done != total:
            evaluate(done)
        if ckpt.enable_checkpoint and done % ckpt.save_freq == 0 and done != total:
            checkpoint(f"step_{done:06d}", done, ckpt.max_keep)
    bar.close()
    evaluate(total)
    if ckpt.enable_checkpoint and total % ckpt.save_freq == 0:
        checkpoint(f"step_{total:06d}", total, ckpt.max_keep)
    if ckpt.enable_checkpoint:
        checkpoint("final", total, None, config=to_dict(cfg))
    logger.close()
    if tm.lora and cfg.local.lora.merge_final:
        save_merged(tm, run.merged, kept=f"the adapter checkpoint {run.final} is complete")
    return TrainResult.read(algo.kind, run, total, start or None, total - start, timer())


def check_capacity(cfg: Any, tm: TrainModel, run: RunFolder, kind: str) -> None:
    """Refuse a run whose checkpoint the disk cannot hold, or (on a GPU) whose mode cannot fit its memory before
    activations; see :mod:`recipe_lib.train.capacity`."""
    fp = footprint(tm.model)
    lora = tm.lora
    parts = checkpoint_parts(fp, lora) if cfg.train.ckpt.enable_checkpoint else {}
    if lora and cfg.local.lora.merge_final:
        parts["merged model"] = fp.frozen_bytes
    hint = "free some space or point train.output_dir at a bigger disk"
    if not lora:
        hint += "; LoRA checkpoints (local.lora.enable=true) hold the adapter only"
    if parts:
        check_disk(run.root, parts, "a checkpoint" if cfg.train.ckpt.enable_checkpoint else "the merged model", hint)
    if not str(tm.device).startswith("cuda"):
        return
    import torch

    budget = torch.cuda.get_device_properties(torch.device(tm.device)).total_memory
    reference = kind == "grpo" and not lora and cfg.train.train_policy.kl_beta > 0
    mode = f"{'LoRA' if lora else 'full-parameter'} {kind.upper()} of {fp.params / 1e9:.2f} B parameters in {tm.dtype}"
    alternative = None if lora else lora_parameter_count(tm.model, cfg.local.lora.target_modules, cfg.local.lora.r)
    check_memory(fp, budget, f"{tm.device} ({torch.cuda.get_device_name(torch.device(tm.device))})", mode, reference,
                 alternative)  # fmt: skip


@contextlib.contextmanager
def gpu_memory(cfg: Any, tm: TrainModel, step: int, kind: str) -> Iterator[dict[str, int]]:
    """On a GPU: yields a dict that receives the block's peak memory (``gpu_peak_bytes``), and turns CUDA running out
    of memory into one RecipeError naming the settings that need less. Elsewhere: an empty dict."""
    peak: dict[str, int] = {}
    if not str(tm.device).startswith("cuda"):
        yield peak
        return
    import torch

    device = torch.device(tm.device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        yield peak
    except torch.cuda.OutOfMemoryError:
        total = torch.cuda.get_device_properties(device).total_memory
        error = out_of_memory_error(cfg, step, kind, str(tm.device), torch.cuda.max_memory_allocated(device), total)
        raise error from None
    peak["gpu_peak_bytes"] = int(torch.cuda.max_memory_allocated(device))
