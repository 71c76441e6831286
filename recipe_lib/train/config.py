"""Training configs shared by the in-process trainers and the cosmos-rl path.

One TOML shape serves both: the tables and key names are cosmos-rl's (``[train]``, ``[train.train_policy]``,
``[train.ckpt]``, ``[policy]``, ``[rollout]``, ``[validation]``, ``[custom]``), so a value means the same thing whether
the small trainer in this process reads it or cosmos-rl does. Settings only the in-process trainers use live in a
separate ``[local]`` table (device, step cap, LoRA, TensorBoard folder); cosmos-rl never sees it.

Loading is strict (:func:`recipe_lib.config.from_mapping`): an unknown key is an error naming the closest valid key.
:func:`from_cosmos_mapping` reads the shared subset out of a full cosmos-rl TOML (which also holds parallelism,
logging and other cosmos-only tables) so one file can drive a small local rehearsal of a big run.

Example (``configs/demo/grpo.toml``)::

    [policy]
    model_name_or_path = "build/models/tiny-critic"
    model_max_length = 2048

    [train]
    epoch = 1
    train_batch_per_replica = 4
    optm_lr = 2e-6

    [train.train_policy]
    type = "grpo"
    kl_beta = 0.05

    [rollout]
    n_generation = 4

    [custom.dataset]
    path = "build/data/grpo_conversations"

    [local]
    device = "cpu"
    max_steps = 20
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from recipe_lib.config import from_mapping, load_toml
from recipe_lib.errors import ConfigError

DEFAULT_MODEL = "nvidia/Cosmos-Reason1-7B"


@dataclasses.dataclass
class OptimConfig:
    """Optimizer and schedule; the keys sit directly in ``[train]`` as in cosmos-rl (``optm_*``, same defaults).

    ``optm_warmup_steps``: an integer step count, or a float in [0, 1] read as a fraction of the run. After warm-up
    (from ``optm_warmup_start_factor`` x lr) the rate is constant unless ``optm_decay_type`` (linear | sqrt | cosine)
    decays it over the last ``optm_decay_ratio`` of the run down to ``optm_min_lr_factor`` x lr.
    """

    optm_name: str = "AdamW"
    optm_lr: float = 2e-6
    optm_betas: tuple[float, float] = (0.9, 0.999)
    optm_weight_decay: float = 0.01
    optm_warmup_steps: int | float = 20
    optm_warmup_start_factor: float = 0.0
    optm_decay_type: str | None = None
    optm_decay_ratio: float | None = None
    optm_min_lr_factor: float = 0.0
    optm_grad_norm_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.optm_lr <= 0:
            raise ConfigError(f"train.optm_lr must be positive, got {self.optm_lr}")
        if len(self.optm_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.optm_betas):
            raise ConfigError(f"train.optm_betas must be two numbers in [0, 1), got {list(self.optm_betas)}")
        if self.optm_weight_decay < 0:
            raise ConfigError(f"train.optm_weight_decay must be >= 0, got {self.optm_weight_decay}")
        if self.optm_warmup_steps < 0 or (isinstance(self.optm_warmup_steps, float) and self.optm_warmup_steps > 1):
            raise ConfigError(
                f"train.optm_warmup_steps must be a step count >= 0 or a fraction in [0, 1], "
                f"got {self.optm_warmup_steps}"
            )
        for key in ("optm_warmup_start_factor", "optm_min_lr_factor"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"train.{key} must be in [0, 1], got {getattr(self, key)}")
        if self.optm_decay_type not in (None, "none", "linear", "sqrt", "cosine"):
            raise ConfigError(
                f"train.optm_decay_type: unknown decay '{self.optm_decay_type}'",
                hint="use linear, sqrt, cosine or none",
            )
        if self.optm_decay_ratio is not None and not 0.0 <= self.optm_decay_ratio <= 1.0:
            raise ConfigError(f"train.optm_decay_ratio must be in [0, 1], got {self.optm_decay_ratio}")
        if self.optm_grad_norm_clip <= 0:
            raise ConfigError(f"train.optm_grad_norm_clip must be positive, got {self.optm_grad_norm_clip}")


@dataclasses.dataclass
class CheckpointConfig:
    """``[train.ckpt]``: save every ``save_freq`` optimizer steps, keep the newest ``max_keep``, plus ``final`` after
    the last step; ``enable_checkpoint = false`` writes no checkpoint at all (a run that only times its steps)."""

    enable_checkpoint: bool = True
    save_freq: int = 50
    max_keep: int = 5

    def __post_init__(self) -> None:
        if self.save_freq <= 0:
            raise ConfigError(f"train.ckpt.save_freq must be a positive step count, got {self.save_freq}")
        if self.max_keep == 0 or self.max_keep < -1:
            raise ConfigError(f"train.ckpt.max_keep must be positive (or -1 to keep all), got {self.max_keep}")


@dataclasses.dataclass
class SFTPolicyConfig:
    """``[train.train_policy]`` for SFT."""

    type: Literal["sft"] = "sft"
    mini_batch: int = 4
    conversation_column_name: str = "conversations"
    dataloader_shuffle: bool = True
    dataloader_seed: int = 0

    def __post_init__(self) -> None:
        if self.mini_batch <= 0:
            raise ConfigError(f"train.train_policy.mini_batch must be positive, got {self.mini_batch}")


@dataclasses.dataclass
class GRPOPolicyConfig:
    """``[train.train_policy]`` for GRPO (cosmos-rl's names: clip range, KL weight, inner iterations)."""

    type: Literal["grpo"] = "grpo"
    mini_batch: int = 4
    kl_beta: float = 0.05
    temperature: float = 0.9
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    mu_iterations: int = 1
    dataloader_shuffle: bool = True
    dataloader_seed: int = 0

    def __post_init__(self) -> None:
        if self.mini_batch <= 0:
            raise ConfigError(f"train.train_policy.mini_batch must be positive, got {self.mini_batch}")
        if self.kl_beta < 0:
            raise ConfigError(f"train.train_policy.kl_beta must be >= 0, got {self.kl_beta}")
        if self.temperature <= 0:
            raise ConfigError(f"train.train_policy.temperature must be positive, got {self.temperature}")
        if not (0 < self.epsilon_low < 1 and self.epsilon_high > 0):
            raise ConfigError(
                f"train.train_policy.epsilon_low/epsilon_high must be in (0, 1) and positive, "
                f"got {self.epsilon_low}/{self.epsilon_high}"
            )
        if self.mu_iterations <= 0:
            raise ConfigError(f"train.train_policy.mu_iterations must be positive, got {self.mu_iterations}")


@dataclasses.dataclass
class _TrainBase(OptimConfig):
    epoch: int = 1
    train_batch_per_replica: int = 32
    output_dir: str = "./outputs"
    seed: int | None = 42
    ckpt: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epoch <= 0:
            raise ConfigError(f"train.epoch must be positive, got {self.epoch}")
        if self.train_batch_per_replica <= 0:
            raise ConfigError(f"train.train_batch_per_replica must be positive, got {self.train_batch_per_replica}")


@dataclasses.dataclass
class SFTTrainConfig(_TrainBase):
    """``[train]`` for SFT (optimizer keys inherited from :class:`OptimConfig`; lr 1e-6 is cosmos-rl's default)."""

    optm_lr: float = 1e-6
    train_policy: SFTPolicyConfig = dataclasses.field(default_factory=SFTPolicyConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_batch_split(self.train_batch_per_replica, self.train_policy.mini_batch)


@dataclasses.dataclass
class GRPOTrainConfig(_TrainBase):
    """``[train]`` for GRPO (the recipe's AdamW betas 0.9/0.95)."""

    optm_betas: tuple[float, float] = (0.9, 0.95)
    train_batch_per_replica: int = 128
    train_policy: GRPOPolicyConfig = dataclasses.field(default_factory=GRPOPolicyConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_batch_split(self.train_batch_per_replica, self.train_policy.mini_batch)


def _check_batch_split(batch: int, mini_batch: int) -> None:
    if batch % mini_batch:
        raise ConfigError(
            f"train.train_batch_per_replica ({batch}) is not a multiple of "
            f"train.train_policy.mini_batch ({mini_batch})",
            hint="the batch is split into mini-batches for gradient accumulation; pick sizes that divide",
        )


@dataclasses.dataclass
class PolicyConfig:
    """``[policy]``: the model trained (hub id or local folder) and its token budget."""

    model_name_or_path: str = DEFAULT_MODEL
    model_max_length: int = 4096
    model_gradient_checkpointing: bool = True

    def __post_init__(self) -> None:
        if not self.model_name_or_path.strip():
            raise ConfigError("policy.model_name_or_path is empty", hint="give a hub id or a local model folder")
        if self.model_max_length <= 0:
            raise ConfigError(f"policy.model_max_length must be positive, got {self.model_max_length}")


@dataclasses.dataclass
class RolloutConfig:
    """``[rollout]`` (GRPO): completions per prompt and their length cap."""

    n_generation: int = 8
    max_response_length: int = 6144

    def __post_init__(self) -> None:
        if self.n_generation < 2:
            raise ConfigError(
                f"rollout.n_generation must be at least 2, got {self.n_generation}",
                hint="GRPO compares completions of the same prompt; one completion has no group to compare with",
            )
        if self.max_response_length <= 0:
            raise ConfigError(f"rollout.max_response_length must be positive, got {self.max_response_length}")


@dataclasses.dataclass
class ValidationConfig:
    """``[validation]``: evaluate on ``custom.eval_dataset`` every ``freq`` steps when ``enable``."""

    enable: bool = False
    freq: int = 50
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.freq <= 0:
            raise ConfigError(f"validation.freq must be a positive step count, got {self.freq}")


@dataclasses.dataclass
class DatasetPath:
    """``[custom.dataset]`` / ``[custom.eval_dataset]``: a conversation dataset saved with ``save_to_disk``."""

    path: str = ""


@dataclasses.dataclass
class VisionConfig:
    """``[custom.vision]``: video sampling keys written into every sample, overriding the dataset's own.

    Leave a key out (or the whole table) to keep what each conversation already says.
    """

    fps: float | None = None
    total_pixels: int | None = None
    max_pixels: int | None = None
    min_pixels: int | None = None

    def __post_init__(self) -> None:
        if self.fps is not None and self.fps <= 0:
            raise ConfigError(f"custom.vision.fps must be positive, got {self.fps}")
        for key in ("total_pixels", "max_pixels", "min_pixels"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f"custom.vision.{key} must be positive, got {value}")

    def overrides(self) -> dict[str, Any]:
        """The keys that are set, ready to merge into a video message part."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclasses.dataclass
class RewardConfig:
    """``[custom.reward]`` (GRPO): see :mod:`recipe_lib.train.rewards` for the choices. The defaults are the cookbook's
    GRPO script's reward: ``dense`` plus 1.0 x the format reward."""

    score: str = "dense"
    format_weight: float = 1.0

    def __post_init__(self) -> None:
        from recipe_lib.train.rewards import SCORE_REWARDS

        if self.score not in SCORE_REWARDS:
            raise ConfigError(
                f"custom.reward.score: unknown reward '{self.score}'", hint=f"use one of: {', '.join(SCORE_REWARDS)}"
            )
        if self.format_weight < 0:
            raise ConfigError(f"custom.reward.format_weight must be >= 0, got {self.format_weight}")


@dataclasses.dataclass
class SFTCustomConfig:
    """``[custom]`` for SFT: our own settings, passed through cosmos-rl untouched to the entry script."""

    dataset: DatasetPath = dataclasses.field(default_factory=DatasetPath)
    eval_dataset: DatasetPath | None = None
    vision: VisionConfig = dataclasses.field(default_factory=VisionConfig)


@dataclasses.dataclass
class GRPOCustomConfig(SFTCustomConfig):
    """``[custom]`` for GRPO: adds the reward choice."""

    reward: RewardConfig = dataclasses.field(default_factory=RewardConfig)


@dataclasses.dataclass
class LoraConfig:
    """``[local.lora]``: low-rank adapters for the in-process trainers (off by default).

    Checkpoints then hold the adapter only (PEFT's ``adapter_config.json`` + ``adapter_model.safetensors``), which
    ``plausibility score``/``sweep`` and the stages load onto the base model. ``merge_final``: also write the merged
    model once, as ``<output_dir>/merged``, after the last step (``plausibility merge`` does it for any checkpoint).
    """

    enable: bool = False
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = dataclasses.field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    merge_final: bool = False

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ConfigError(f"local.lora.r must be positive, got {self.r}")


@dataclasses.dataclass
class LocalConfig:
    """``[local]``: settings of the in-process trainers only (cosmos-rl never reads them).

    ``max_steps`` caps optimizer steps (None: run all epochs); ``tensorboard_dir`` None means
    ``<output_dir>/tensorboard``.
    """

    device: str = "cpu"
    dtype: str = "float32"
    max_steps: int | None = None
    log_every: int = 1
    tensorboard_dir: str | None = None
    num_workers: int = 0
    # "shuffle": a seeded permutation per epoch; "balanced": every batch holds the labels in equal shares.
    batch_order: Literal["shuffle", "balanced"] = "shuffle"
    # The speed-ups that compute the same function, gradients included (recipe_lib.train.model.training_speedups);
    # false runs transformers' modules as they are.
    speedups: bool = True
    # MiB of processor outputs the trainer keeps, so a prompt drawn again is not encoded again (0: encode every time);
    # float32 patches take 0.3 MB a demo clip read at 56x56, 38 MB a clip of 8 192 patches.
    encoding_memo_mib: int = 2048
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig)

    def __post_init__(self) -> None:
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError(f"local.max_steps must be positive, got {self.max_steps}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"local.dtype: unknown dtype '{self.dtype}'", hint="use float32, bfloat16 or float16")
        if self.log_every <= 0:
            raise ConfigError(f"local.log_every must be positive, got {self.log_every}")
        if self.encoding_memo_mib < 0:
            raise ConfigError(f"local.encoding_memo_mib must be 0 or more, got {self.encoding_memo_mib}")


@dataclasses.dataclass
class _RunConfig:
    """The tables every run has besides its own: evaluation cadence and the in-process settings."""

    validation: ValidationConfig = dataclasses.field(default_factory=ValidationConfig)
    local: LocalConfig = dataclasses.field(default_factory=LocalConfig)

    @property
    def optim(self) -> OptimConfig:
        return _optim_of(self.train)  # type: ignore[attr-defined]


@dataclasses.dataclass
class SFTConfig(_RunConfig):
    """A whole SFT run: the cosmos-rl tables we share plus ``[local]``."""

    policy: PolicyConfig = dataclasses.field(default_factory=PolicyConfig)
    train: SFTTrainConfig = dataclasses.field(default_factory=SFTTrainConfig)
    custom: SFTCustomConfig = dataclasses.field(default_factory=SFTCustomConfig)

    kind = "sft"


@dataclasses.dataclass
class GRPOConfig(_RunConfig):
    """A whole GRPO run: the cosmos-rl tables we share (with ``[rollout]``) plus ``[local]``."""

    policy: PolicyConfig = dataclasses.field(default_factory=lambda: PolicyConfig(model_max_length=10240))
    train: GRPOTrainConfig = dataclasses.field(default_factory=GRPOTrainConfig)
    rollout: RolloutConfig = dataclasses.field(default_factory=RolloutConfig)
    custom: GRPOCustomConfig = dataclasses.field(default_factory=GRPOCustomConfig)

    kind = "grpo"


def _optim_of(train: _TrainBase) -> OptimConfig:
    return OptimConfig(**{f.name: getattr(train, f.name) for f in dataclasses.fields(OptimConfig)})


CONFIG_CLASSES: dict[str, type[SFTConfig] | type[GRPOConfig]] = {"sft": SFTConfig, "grpo": GRPOConfig}


def _class_for(kind: str) -> type[SFTConfig] | type[GRPOConfig]:
    if kind not in CONFIG_CLASSES:
        raise ConfigError(f"unknown training kind '{kind}'", hint="use 'sft' or 'grpo'")
    return CONFIG_CLASSES[kind]


def _kind_of(mapping: Mapping[str, Any], where: str) -> str:
    train = mapping.get("train", {})
    policy = train.get("train_policy", {}) if isinstance(train, Mapping) else {}
    kind = policy.get("type") if isinstance(policy, Mapping) else None
    if kind not in CONFIG_CLASSES:
        raise ConfigError(f"{where}: cannot tell SFT from GRPO", hint='set [train.train_policy] type = "sft" or "grpo"')
    return str(kind)


def training_config(mapping: Mapping[str, Any], kind: str | None = None, where: str = "config"):  # noqa: ANN201
    """A strict :class:`SFTConfig` / :class:`GRPOConfig` from a mapping (kind from ``train.train_policy.type``)."""
    kind = kind or _kind_of(mapping, where)
    return from_mapping(_class_for(kind), mapping, where)


def load_training_config(path: str | Path, kind: str | None = None) -> SFTConfig | GRPOConfig:
    """Read a demo-style TOML strictly (unknown keys are errors)."""
    return training_config(load_toml(path), kind, where=str(path))


def load_sft_config(path: str | Path) -> SFTConfig:
    cfg = load_training_config(path, "sft")
    assert isinstance(cfg, SFTConfig)
    return cfg


def load_grpo_config(path: str | Path) -> GRPOConfig:
    cfg = load_training_config(path, "grpo")
    assert isinstance(cfg, GRPOConfig)
    return cfg


def _shared_subset(cls: type, mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only the keys ``cls`` knows (recursively), dropping cosmos-only keys."""
    import typing

    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in mapping:
            continue
        value = mapping[f.name]
        hint = hints[f.name]
        inner = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]
        target = hint if dataclasses.is_dataclass(hint) else (inner[0] if inner else None)
        out[f.name] = _shared_subset(target, value) if target is not None and isinstance(value, Mapping) else value
    return out


def from_cosmos_mapping(mapping: Mapping[str, Any], local: Mapping[str, Any] | None = None, where: str = "config"):  # noqa: ANN201
    """The shared subset of a full cosmos-rl config (e.g. ``configs/full/grpo.toml``), plus optional ``[local]`` keys.

    cosmos-only tables and keys (parallelism, logging, rollout backend, ...) are left out instead of rejected; the
    values that remain are checked as strictly as a demo TOML.
    """
    kind = _kind_of(mapping, where)
    cls = _class_for(kind)
    subset = _shared_subset(cls, mapping)
    if local is not None:
        subset["local"] = dict(local)
    return from_mapping(cls, subset, where)
