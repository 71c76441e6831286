"""GRPO (group relative policy optimisation) of a video critic in this process (CPU or one GPU).

``train_grpo(GRPOConfig) -> TrainResult``: the :class:`GRPO` learning rule run by the shared loop
(:func:`recipe_lib.train.loop.run_training`); the TOML keys are cosmos-rl's (``recipe_lib.train.config``).

One step
--------
1. Take ``P = train.train_batch_per_replica / rollout.n_generation`` prompts (a seeded per-epoch order over the
   conversation dataset; balance its labels when preparing it — :func:`recipe_lib.data.splits.balance_labels` — or the
   policy collapses onto the most common score).
2. Sample ``n = rollout.n_generation`` completions per prompt at ``train.train_policy.temperature`` (no top-k/top-p
   truncation, at most ``rollout.max_response_length`` tokens, stopping at the end-of-turn token).
3. Reward each completion with :func:`recipe_lib.train.rewards.combined_reward` against the sample's label
   (``[custom.reward]``: ``dense`` 1 / 0.5 / 0 or ``linear``, plus ``format_weight`` x the format reward; default
   ``dense`` + 1.0 x format, the cookbook's GRPO script).
4. Advantages are normalised within each prompt's group: ``A = (r - mean(r)) / (std(r) + 1e-6)`` (sample std), and
   0 for every completion of a group whose rewards are all equal — such a group carries no signal; the share of
   groups that do is logged as ``signal_fraction``.
5. ``mu_iterations`` passes over the rollouts, one optimizer step each (micro-batches of ``mini_batch`` completions,
   gradient accumulation). With one pass the policy being updated is the one that sampled, so ``pi_old`` is the
   policy's own log-probabilities detached (ratio 1, gradient ``A * grad log pi``) and no separate forward pass is
   spent on it; with more, ``pi_old`` is computed once before the first update. The per-token loss is the clipped
   surrogate ``-min(ratio * A, clip(ratio, 1 - epsilon_low, 1 + epsilon_high) * A)`` with ``ratio = pi / pi_old``
   (pi_old: the policy that sampled the completions) plus ``kl_beta`` x the k3 estimate of KL(pi || pi_ref) to the
   frozen starting model, ``exp(ref - logp) - (ref - logp) - 1`` (unbiased, never negative, low variance: Schulman's
   k3, as in DeepSeekMath's GRPO). Token losses are averaged over all completion tokens of the step, so long and
   short completions weigh the same per token. Log-probabilities use logits divided by the sampling temperature, as
   the rollouts were drawn from that distribution.

Logged per step (``history.jsonl``, TensorBoard): mean / std reward, ``signal_fraction``, ``kl`` (of the policy that
sampled the step), ``clip_fraction`` (share of completion tokens whose ratio was clipped), completion length, the
share of completions with a parsable score (``parsed_fraction``) and their mean reward (``reward_parsed``), loss,
gradient norm, learning rate. Checkpoints and resumption are the loop's; the reference model
is always the starting model (``policy.model_name_or_path``), also after a resume.

See :mod:`recipe_lib.train.sft` for why this is a plain torch loop rather than TRL.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from recipe_lib.errors import ConfigError, DataError
from recipe_lib.inference.requests import repeat_rows
from recipe_lib.models.family import QWEN3_VL
from recipe_lib.train.batching import Encoder, Sample, to_device, token_logprobs
from recipe_lib.train.config import GRPOConfig
from recipe_lib.train.loop import TrainContext, TrainResult, run_training
from recipe_lib.train.model import eval_mode, freeze, load_frozen
from recipe_lib.train.rewards import combined_reward

ADV_EPS = 1e-6
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")


# ---------------------------------------------------------------------------------------------------------------------
# the pieces of the objective (each tested on its own)


def group_advantages(rewards: Any, eps: float = ADV_EPS) -> tuple[Any, Any]:
    """Group-normalised advantages of a (groups, n) reward tensor, and which groups carry signal.

    ``A[g, i] = (r[g, i] - mean_g) / (std_g + eps)`` with the sample standard deviation; a group whose rewards are all
    equal gets zero advantages (and ``False`` in the returned mask).
    """
    import torch

    r = torch.as_tensor(rewards, dtype=torch.float32)
    if r.ndim != 2 or r.shape[1] < 2:
        raise ValueError(f"rewards must have shape (groups, n >= 2), got {tuple(r.shape)}")
    mean = r.mean(dim=1, keepdim=True)
    std = r.std(dim=1, unbiased=True, keepdim=True)
    signal = (r.max(dim=1).values - r.min(dim=1).values) > 1e-9
    adv = (r - mean) / (std + eps)
    adv = torch.where(signal.unsqueeze(1), adv, torch.zeros_like(adv))
    return adv, signal


def clipped_surrogate(
    logp: Any, old_logp: Any, advantages: Any, epsilon_low: float, epsilon_high: float
) -> tuple[Any, Any]:
    """Per-token PPO-style loss ``-min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A)`` and the mask of tokens
    where clipping is active (the clipped term is the smaller one and differs from the unclipped term).

    ``logp`` / ``old_logp``: (B, K) token log-probabilities; ``advantages``: (B,) or (B, K).
    """
    import torch

    adv = advantages.unsqueeze(-1) if advantages.ndim == 1 else advantages
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high) * adv
    objective = torch.minimum(unclipped, clipped)
    active = clipped < unclipped
    return -objective, active


def kl_k3(logp: Any, ref_logp: Any) -> Any:
    """Per-token k3 estimate of KL(pi || pi_ref) from samples of pi: ``exp(ref - logp) - (ref - logp) - 1`` (>= 0)."""
    import torch

    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


def grpo_loss(
    logp: Any,
    old_logp: Any,
    ref_logp: Any | None,
    advantages: Any,
    mask: Any,
    epsilon_low: float,
    epsilon_high: float,
    kl_beta: float,
    n_tokens: int | None = None,
) -> tuple[Any, dict[str, float]]:
    """The GRPO loss summed over masked tokens and divided by ``n_tokens`` (default: the tokens in ``mask``).

    Returns the loss and the sums needed for logging (``kl_sum``, ``clipped``, ``tokens``).
    """
    import torch

    m = mask.to(logp.dtype)
    denom = float(n_tokens if n_tokens is not None else max(int(mask.sum()), 1))
    surrogate, active = clipped_surrogate(logp, old_logp, advantages, epsilon_low, epsilon_high)
    per_token = surrogate
    kl_sum = 0.0
    if ref_logp is not None:
        kl = kl_k3(logp, ref_logp)
        kl_sum = float((kl.detach() * m).sum())
        if kl_beta:
            per_token = per_token + kl_beta * kl
    loss = (per_token * m).sum() / denom
    stats = {
        "kl_sum": kl_sum,
        "clipped": float((active & mask.bool()).sum()),
        "tokens": float(m.sum()),
        "surrogate_sum": float((surrogate.detach() * m).sum()),
    }
    return loss, stats if torch.isfinite(loss) else {**stats, "nonfinite": 1.0}


# ---------------------------------------------------------------------------------------------------------------------
# rollouts


def sample_completions(
    model: Any,
    encoder: Encoder,
    samples: list[Sample],
    clips: list[Any],
    n: int,
    temperature: float,
    max_new_tokens: int,
    device: str,
    dtype: Any,
) -> list[list[int]]:
    """``n`` sampled completions per prompt (prompt-major order), cut after the first end-of-turn token."""
    import torch

    prompts = encoder.encode_prompts(samples, clips)
    inputs = to_device(dict(prompts), device, dtype)
    returns = n
    if encoder.family == QWEN3_VL and n > 1:
        # transformers' Qwen3-VL cannot return several sequences per video prompt: repeat the rows instead.
        inputs, returns = repeat_rows(inputs, n), 1
    end_id = encoder.end_ids[-1]
    # A vision placeholder inside a completion would be read as a slot for video features on the policy pass.
    vision = [t for t in VISION_TOKENS if t in encoder.tokenizer.get_vocab()]
    suppress = encoder.tokenizer.convert_tokens_to_ids(vision) if vision else None
    with eval_mode(model), torch.no_grad():
        out = model.generate(
            **inputs,
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            num_return_sequences=returns,
            eos_token_id=end_id,
            pad_token_id=encoder.pad_id,
            suppress_tokens=suppress,
        )
    new = out[:, inputs["input_ids"].shape[1] :].tolist()
    completions = []
    for row in new:
        cut = row.index(end_id) + 1 if end_id in row else len(row)
        completions.append(row[:cut])
    return completions


def score_completions(
    encoder: Encoder, samples: list[Sample], completions: list[list[int]], n: int, reward: Any
) -> tuple[Any, list[str], list[bool]]:
    """Rewards (P, n), decoded texts and whether each text holds a parsable score."""
    import torch

    from recipe_lib.inference.parsing import parse_answer

    texts = encoder.tokenizer.batch_decode(completions, skip_special_tokens=True)
    values, parsed = [], []
    for i, text in enumerate(texts):
        sample = samples[i // n]
        if sample.reference is None:
            raise DataError(f"sample {sample.index} has no label to reward against", hint="keep a 'reference' column")
        values.append(combined_reward(text, sample.reference, score=reward.score, format_weight=reward.format_weight))
        parsed.append(parse_answer(text).ok)
    return torch.tensor(values, dtype=torch.float32).view(len(samples), n), texts, parsed


def repeat_prompts(encoder: Encoder, samples: list[Sample], clips: list[Any], n: int) -> Any:
    """Prompt inputs with every prompt repeated ``n`` times (prompt-major), matching the completions' order."""
    return encoder.encode_prompts([s for s in samples for _ in range(n)], [c for c in clips for _ in range(n)])


# ---------------------------------------------------------------------------------------------------------------------
# training


def prompts_per_step(cfg: GRPOConfig) -> int:
    n = cfg.rollout.n_generation
    batch = cfg.train.train_batch_per_replica
    if batch % n:
        raise ConfigError(
            f"train.train_batch_per_replica ({batch}) is not a multiple of rollout.n_generation ({n})",
            hint="the batch counts completions: prompts per step x completions per prompt",
        )
    return batch // n


class GRPO:
    """Group relative policy optimisation (see the module docstring for one step)."""

    kind = "grpo"
    require_answer = False
    require_labels = True
    progress_key = "reward_mean"

    def __init__(self) -> None:
        self.reference: Any = None

    def samples_per_step(self, cfg: GRPOConfig) -> int:
        return prompts_per_step(cfg)

    def optimizer_steps_per_step(self, cfg: GRPOConfig) -> int:
        return cfg.train.train_policy.mu_iterations

    def eval_batch_size(self, cfg: GRPOConfig) -> int:
        return cfg.validation.batch_size or 8

    def setup(self, ctx: TrainContext, resumed: bool) -> None:
        """The frozen reference policy for the KL term: the starting model, also after a resume (under LoRA the
        base model with its adapters switched off serves instead)."""
        cfg = ctx.cfg
        self.reference = None
        if cfg.train.train_policy.kl_beta > 0 and not ctx.tm.lora:
            if resumed:
                self.reference = load_frozen(cfg.policy.model_name_or_path, cfg.local)
            else:
                self.reference = freeze(copy.deepcopy(ctx.tm.model))

    def _ref_logprobs(self, ctx: TrainContext, inputs: dict[str, Any], targets: Any) -> Any:
        import torch

        policy = ctx.cfg.train.train_policy
        if policy.kl_beta <= 0:
            return None
        with torch.no_grad():
            if ctx.tm.lora:
                with ctx.tm.model.disable_adapter():
                    return token_logprobs(ctx.tm.model, inputs, targets, temperature=policy.temperature)
            return token_logprobs(self.reference, inputs, targets, temperature=policy.temperature)

    def step(self, ctx: TrainContext, samples: list[Sample], clips: list[Any]) -> dict[str, Any]:
        import torch

        cfg, tm = ctx.cfg, ctx.tm
        policy = cfg.train.train_policy
        n = cfg.rollout.n_generation
        mini = policy.mini_batch
        temperature = policy.temperature
        completions = sample_completions(
            tm.model, ctx.encoder, samples, clips, n, temperature, cfg.rollout.max_response_length, tm.device, ctx.dtype
        )
        rewards, texts, parsed = score_completions(ctx.encoder, samples, completions, n, cfg.custom.reward)
        advantages, signal = group_advantages(rewards)
        flat_adv = advantages.reshape(-1)
        prompt_inputs = repeat_prompts(ctx.encoder, samples, clips, n)
        inputs, targets, mask = ctx.encoder.append(prompt_inputs, completions)
        n_tokens = max(int(mask.sum()), 1)
        # Split into micro-batches once; old and reference log-probabilities come from the policy before updating.
        chunks = []
        for j in range(0, targets.shape[0], mini):
            sub_inputs = _slice_inputs(inputs, j, j + mini, samples, n)
            sub_targets, sub_mask = _trim(targets[j : j + mini], mask[j : j + mini])
            sub_inputs = _trim_inputs(sub_inputs)
            dev_inputs = to_device(sub_inputs, tm.device, ctx.dtype)
            old = None  # one pass: the policy that sampled is the one being updated, pi_old = pi (see step 5)
            if policy.mu_iterations > 1:
                with torch.no_grad(), eval_mode(tm.model):
                    old = token_logprobs(tm.model, dev_inputs, sub_targets, temperature=temperature)
            ref = self._ref_logprobs(ctx, dev_inputs, sub_targets)
            chunks.append((dev_inputs, sub_targets, sub_mask, old, ref, flat_adv[j : j + mini]))
        stats = {"kl_sum": 0.0, "kl_tokens": 0.0, "clipped": 0.0, "tokens": 0.0, "loss": 0.0}
        grad_norm = 0.0
        for iteration in range(policy.mu_iterations):
            for dev_inputs, sub_targets, sub_mask, old, ref, adv in chunks:
                logp = token_logprobs(tm.model, dev_inputs, sub_targets, temperature=temperature)
                loss, s = grpo_loss(
                    logp,
                    logp.detach() if old is None else old,
                    ref,
                    adv.to(logp.device),
                    sub_mask.to(logp.device),
                    policy.epsilon_low,
                    policy.epsilon_high,
                    policy.kl_beta,
                    n_tokens,
                )
                loss.backward()
                stats["loss"] += float(loss.detach())
                stats["clipped"] += s["clipped"]
                stats["tokens"] += s["tokens"]
                if iteration == 0:  # KL of the policy that sampled this step's completions
                    stats["kl_sum"] += s["kl_sum"]
                    stats["kl_tokens"] += s["tokens"]
            grad_norm = ctx.optimizer_step()
        if ctx.step == ctx.start:
            ctx.run.append(
                "samples.jsonl", {"step": ctx.step + 1, "texts": texts[: 2 * n], "rewards": rewards[:2].tolist()}
            )
        return {
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std()),
            "signal_fraction": float(signal.float().mean()),
            "kl": stats["kl_sum"] / max(stats["kl_tokens"], 1.0),
            "clip_fraction": stats["clipped"] / max(stats["tokens"], 1.0),
            "loss": stats["loss"] / policy.mu_iterations,
            "grad_norm": grad_norm,
            "completion_length": float(np.mean([len(c) for c in completions])),
            "parsed_fraction": float(np.mean(parsed)),
            "reward_parsed": float(rewards.view(-1)[torch.tensor(parsed)].mean()) if any(parsed) else None,
            "prompts": len(samples),
            "label_mean": float(np.mean([s.reference for s in samples])),
        }


def train_grpo(cfg: GRPOConfig, progress: bool = True, restart: bool | str = False) -> TrainResult:
    """Run (or resume, or return the finished) GRPO run described by ``cfg``; ``restart`` as in
    :func:`recipe_lib.train.loop.run_training`."""
    return run_training(cfg, GRPO(), progress=progress, restart=restart)


def _slice_inputs(inputs: dict[str, Any], lo: int, hi: int, samples: list[Sample], n: int) -> dict[str, Any]:
    """Rows ``lo:hi`` of batched inputs, with the matching rows of the concatenated video patches."""
    import torch

    grid = inputs["video_grid_thw"]
    sizes = (grid[:, 0] * grid[:, 1] * grid[:, 2]).tolist()
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    hi = min(hi, grid.shape[0])
    out = {
        "input_ids": inputs["input_ids"][lo:hi],
        "attention_mask": inputs["attention_mask"][lo:hi],
        "video_grid_thw": grid[lo:hi],
        "pixel_values_videos": inputs["pixel_values_videos"][offsets[lo] : offsets[hi]],
    }
    if "second_per_grid_ts" in inputs:
        out["second_per_grid_ts"] = torch.as_tensor(inputs["second_per_grid_ts"])[lo:hi]
    return out


def _trim_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """Drop leading columns that are padding in every row of a micro-batch."""
    mask = inputs["attention_mask"]
    used = mask.any(dim=0).nonzero()
    first = int(used[0]) if len(used) else 0
    if first == 0:
        return inputs
    return {**inputs, "input_ids": inputs["input_ids"][:, first:], "attention_mask": mask[:, first:]}


def _trim(targets: Any, mask: Any) -> tuple[Any, Any]:
    """Drop leading target columns that no row of a micro-batch uses."""
    used = mask.any(dim=0).nonzero()
    first = int(used[0]) if len(used) else 0
    return targets[:, first:], mask[:, first:]
