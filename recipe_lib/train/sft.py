"""Supervised fine-tuning of a video critic in this process (CPU or one GPU), on a conversation dataset.

``train_sft(SFTConfig) -> TrainResult``: the :class:`SFT` learning rule run by the shared loop
(:func:`recipe_lib.train.loop.run_training`). The TOML keys are cosmos-rl's (``recipe_lib.train.config``), so one
file drives this loop for a rehearsal and cosmos-rl for the multi-GPU run.

What one optimizer step does: take ``train.train_batch_per_replica`` samples — a seeded per-epoch permutation, or
with ``[local] batch_order = "balanced"`` batches that hold every label in equal shares
(:func:`recipe_lib.train.data_order.balanced_batches`) — run them in micro-batches of ``train.train_policy.mini_batch``
(gradient accumulation), with the cross-entropy on the assistant answer tokens only
(``<answer>\\nN\\n</answer><|im_end|>``; see :mod:`recipe_lib.train.batching`) averaged over all answer tokens of the
step, clip the gradient norm to ``optm_grad_norm_clip``, and step AdamW with cosmos-rl's warm-up / decay schedule
(:func:`recipe_lib.train.optim.lr_factor`).

Evaluation (:mod:`recipe_lib.train.held_out`), checkpoints and resuming are the loop's
(:mod:`recipe_lib.train.loop`), shared with GRPO.

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

from typing import Any

from recipe_lib.train.batching import Sample, to_device
from recipe_lib.train.config import SFTConfig
from recipe_lib.train.loop import TrainContext, TrainResult, run_training


class SFT:
    """Supervised fine-tuning: cross-entropy on the answer tokens (see the module docstring)."""

    kind = "sft"
    require_answer = True
    require_labels = False
    progress_key = "loss"

    def samples_per_step(self, cfg: SFTConfig) -> int:
        return cfg.train.train_batch_per_replica

    def optimizer_steps_per_step(self, cfg: SFTConfig) -> int:
        return 1

    def eval_batch_size(self, cfg: SFTConfig) -> int:
        return cfg.validation.batch_size or min(cfg.train.train_policy.mini_batch, cfg.train.train_batch_per_replica)

    def setup(self, ctx: TrainContext, resumed: bool) -> None:
        return None

    def step(self, ctx: TrainContext, samples: list[Sample], clips: list[Any]) -> dict[str, Any]:
        import torch

        cfg = ctx.cfg
        mini = min(cfg.train.train_policy.mini_batch, cfg.train.train_batch_per_replica)
        n_tokens = 0
        encoded = []
        for j in range(0, len(samples), mini):
            inputs, targets, mask = ctx.encoder.encode_sft(samples[j : j + mini], clips[j : j + mini])
            encoded.append((inputs, targets, mask))
            n_tokens += int(mask.sum())
        loss_sum, correct = 0.0, 0
        for inputs, targets, mask in encoded:
            inputs = to_device(inputs, ctx.tm.device, ctx.dtype)
            out = ctx.tm.model(**inputs, use_cache=False, logits_to_keep=targets.shape[1] + 1)
            logits = out.logits[:, :-1, :].float()
            targets = targets.to(logits.device)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
            )
            (loss / max(n_tokens, 1)).backward()
            loss_sum += float(loss.detach())
            correct += int(((logits.argmax(-1) == targets) & mask.to(logits.device)).sum())
        grad_norm = ctx.optimizer_step()
        return {
            "loss": loss_sum / max(n_tokens, 1),
            "token_accuracy": correct / max(n_tokens, 1),
            "grad_norm": grad_norm,
            "samples": len(samples),
        }


def train_sft(cfg: SFTConfig, progress: bool = True, restart: bool | str = False) -> TrainResult:
    """Run (or resume, or return the finished) SFT run described by ``cfg``; ``restart`` as in
    :func:`recipe_lib.train.loop.run_training`."""
    return run_training(cfg, SFT(), progress=progress, restart=restart)
