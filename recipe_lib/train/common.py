"""Pieces both in-process trainers share: paths, model loading (with optional LoRA), AdamW with cosmos-rl's
learning-rate schedule, checkpoints that resume, per-step logs and TensorBoard.

Checkpoints
-----------
A run folder (``train.output_dir``) holds::

    checkpoints/step_000050/   model + processor (``save_pretrained``; loads with ``load_critic``) and
                               ``trainer_state.pt`` (optimizer, scheduler, RNG states, step) + ``trainer_state.json``
    checkpoints/final/         the model after the last step (same layout)
    run.json                   the resolved settings; a rerun with other settings refuses to mix the two runs
    history.jsonl              one line per optimizer step; eval.jsonl: one line per evaluation
    tensorboard/               scalars for TensorBoard
    skipped.jsonl              samples left out (unreadable clip, malformed conversation) and why

Every checkpoint is written to a temporary folder and moved into place in one ``os.replace``, so a run killed at any
moment (SIGKILL included) leaves only complete checkpoints; the next run with the same settings resumes from the newest
one: weights, optimizer moments, scheduler, RNG states and the position in the data order are all restored, and
history lines past that step are dropped. Only the newest ``train.ckpt.max_keep`` step checkpoints are kept.

With LoRA (``[local.lora] enable = true``) the saved model is the base model with the adapters merged in (so it loads
like any checkpoint), and ``adapter/`` holds the adapter weights that a resumed run continues from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recipe_lib.config import REPO_ROOT, build_dir, to_dict
from recipe_lib.errors import ConfigError, RecipeError

CHECKPOINTS = "checkpoints"
FINAL = "final"
STATE_FILE = "trainer_state.pt"
STATE_JSON = "trainer_state.json"
ADAPTER_DIR = "adapter"
_STEP_RE = re.compile(r"^step_(\d+)$")


# ---------------------------------------------------------------------------------------------------------------------
# paths


def resolve_path(value: str | Path) -> Path:
    """A path from a config: absolute as given; ``build/...`` under the build folder (``$PLAUSIBILITY_BUILD_DIR``,
    default ``<repo>/build``); anything else relative to the repository root."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    parts = path.parts
    if parts and parts[0] == "build":
        return build_dir().joinpath(*parts[1:])
    return REPO_ROOT / path


def resolve_model(value: str) -> str:
    """A model setting: a local folder (resolved like :func:`resolve_path`) when one exists there, else a hub id."""
    candidate = resolve_path(value)
    if candidate.exists() or value.startswith(("/", ".", "~", "build/")):
        return str(candidate)
    return value


# ---------------------------------------------------------------------------------------------------------------------
# seeding, devices


def seed_everything(seed: int | None) -> None:
    import numpy as np
    import torch

    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------------------------------
# model


@dataclasses.dataclass
class TrainModel:
    """The model being trained (possibly a PEFT wrapper), its processor and where it runs."""

    model: Any
    processor: Any
    device: str
    dtype: str
    lora: bool

    def base(self) -> Any:
        """The underlying ``Qwen2_5_VLForConditionalGeneration`` (the PEFT base model under LoRA)."""
        return self.model.get_base_model() if self.lora else self.model

    def trainable_parameters(self) -> list[Any]:
        return [p for p in self.model.parameters() if p.requires_grad]


def load_train_model(
    model: str, local: Any, gradient_checkpointing: bool = False, resume_from: Path | None = None
) -> TrainModel:
    """Load the critic to train (``recipe_lib.models.loading.load_critic``) and wrap it with LoRA when asked.

    ``resume_from``: a checkpoint of this run. Its weights are loaded the way any checkpoint loads
    (``from_pretrained``); under LoRA the base model comes from ``model`` and the adapters from the checkpoint.
    """
    from recipe_lib.models.loading import load_critic

    lora = local.lora.enable
    source = str(resume_from) if resume_from is not None and not lora else resolve_model(model)
    critic = load_critic(source, device=local.device, dtype=local.dtype)
    net = critic.model
    if gradient_checkpointing:
        net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        net.config.use_cache = False
    if lora:
        net = apply_lora(net, local.lora)
        if resume_from is not None:
            _load_adapter(net, resume_from, critic.device)
    net.train()
    return TrainModel(net, critic.processor, critic.device, critic.dtype, lora)


def _load_adapter(peft_model: Any, path: Path, device: str) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    files = sorted((path / ADAPTER_DIR).glob("*.safetensors"))
    if not files:
        raise RecipeError(f"checkpoint {path} has no LoRA adapter to resume from", hint="restart the run")
    set_peft_model_state_dict(peft_model, load_file(str(files[0]), device=str(device)))


def apply_lora(model: Any, lora: Any) -> Any:
    """Wrap ``model`` with LoRA adapters (peft) on ``lora.target_modules``; only the adapters train."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:  # pragma: no cover - peft is a dependency
        raise RecipeError("LoRA needs the peft package", hint="pip install peft") from exc
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in lora.target_modules if m not in names]
    if missing:
        raise ConfigError(
            f"local.lora.target_modules: the model has no module named {', '.join(missing)}",
            hint="Qwen2.5-VL's language model uses q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj",
        )
    config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules)
    )
    return get_peft_model(model, config)


def _merged_state_dict(peft_model: Any) -> dict[str, Any]:
    """The base model's weights with the LoRA deltas added, under the base model's own parameter names."""
    peft_model.merge_adapter()
    try:
        state = peft_model.get_base_model().state_dict()
        clean = {}
        for key, value in state.items():
            if "lora_" in key:
                continue
            clean[key.replace(".base_layer.", ".")] = value.detach().clone()
    finally:
        peft_model.unmerge_adapter()
    return clean


# ---------------------------------------------------------------------------------------------------------------------
# optimizer and schedule


def build_optimizer(params: list[Any], train: Any) -> Any:
    import torch

    if train.optm_name.lower() != "adamw":
        raise ConfigError(f"train.optm_name '{train.optm_name}' is not supported here", hint="use AdamW")
    return torch.optim.AdamW(
        params, lr=train.optm_lr, betas=tuple(train.optm_betas), weight_decay=train.optm_weight_decay
    )


def lr_factor(step: int, total_steps: int, train: Any) -> float:
    """cosmos-rl's warm-up / stable / decay schedule: the multiplier of ``optm_lr`` at optimizer step ``step``.

    Linear warm-up over ``optm_warmup_steps`` (a fraction of the run when a float <= 1), then constant, then an
    optional decay (``optm_decay_type`` linear | sqrt | cosine over ``optm_decay_ratio`` of the run, down to
    ``optm_min_lr_factor``); without a decay type the rate stays constant after the warm-up, cosmos-rl's default.
    """
    warm = train.optm_warmup_steps
    warm = int(warm * total_steps) if isinstance(warm, float) and warm <= 1.0 else int(warm)
    warm = min(warm, total_steps)
    decay_type = train.optm_decay_type
    decay_ratio = train.optm_decay_ratio
    min_factor = float(train.optm_min_lr_factor)
    start = float(train.optm_warmup_start_factor)
    decay = round(total_steps * decay_ratio) if decay_ratio is not None else total_steps - warm
    decay = min(decay, total_steps - warm) if decay_type not in (None, "none") else 0
    stable_end = total_steps - decay
    if step < warm:
        return 1.0 if warm == 1 else start + (1.0 - start) * step / (warm - 1)
    if step < stable_end or decay == 0:
        return 1.0
    progress = min(1.0, (step - stable_end) / decay)
    if decay_type == "linear":
        value = 1.0 - progress
    elif decay_type == "sqrt":
        value = 1.0 - math.sqrt(progress)
    elif decay_type == "cosine":
        value = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ConfigError(f"unknown optm_decay_type '{decay_type}'", hint="use linear, sqrt, cosine or none")
    return min_factor + (1.0 - min_factor) * value


def build_scheduler(optimizer: Any, total_steps: int, train: Any) -> Any:
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, train))


# ---------------------------------------------------------------------------------------------------------------------
# run folder


def _atomic_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out.extend(_diff_keys(a.get(key), b.get(key), f"{prefix}{key}."))
        return out
    return [] if a == b else [prefix.rstrip(".")]


# Settings that may change between a run and its resumption without mixing two different runs.
_RESUMABLE_KEYS = ("local.max_steps", "local.log_every", "local.tensorboard_dir", "local.num_workers", "validation")


@dataclasses.dataclass
class RunFolder:
    """The output folder of one training run (see the module docstring for its layout)."""

    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def final(self) -> Path:
        return self.checkpoints / FINAL

    def claim(self, settings: dict[str, Any], restart: bool | str = False) -> bool:
        """Record the run's settings; a folder holding a run with other settings is an error, or is cleared when
        ``restart`` is True or ``"changed"``. Returns True when an earlier run was discarded."""
        marker = self.root / "run.json"
        discarded = False
        if restart is True:
            discarded = marker.exists()
            self.clear()
        elif marker.exists():
            old = json.loads(marker.read_text())
            diff = [k for k in _diff_keys(old, settings) if not k.startswith(_RESUMABLE_KEYS)]
            if diff and restart == "changed":
                self.clear()
                discarded = True
            elif diff:
                raise ConfigError(
                    f"{self.root} holds a run with other settings (differs in: {', '.join(diff[:6])})",
                    hint="choose another train.output_dir, or restart it (--restart / restart=True) to discard it",
                )
        elif self.checkpoints.is_dir() and any(self.checkpoints.iterdir()):
            raise ConfigError(
                f"{self.checkpoints} holds checkpoints but no run.json, so they cannot be resumed safely",
                hint="point train.output_dir at a new folder, or restart it (--restart / restart=True)",
            )
        _atomic_json(marker, settings)
        return discarded

    def clear(self) -> None:
        """Remove what a run writes (and nothing else) from the folder."""
        for name in (CHECKPOINTS, "tensorboard"):
            shutil.rmtree(self.root / name, ignore_errors=True)
        for name in ("history.jsonl", "eval.jsonl", "skipped.jsonl", "run.json"):
            (self.root / name).unlink(missing_ok=True)

    def step_checkpoints(self) -> list[tuple[int, Path]]:
        """Complete step checkpoints, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        found = []
        for p in self.checkpoints.iterdir():
            m = _STEP_RE.match(p.name)
            if m and (p / STATE_JSON).is_file():
                found.append((int(m.group(1)), p))
        return sorted(found)

    def finished(self, total_steps: int | None = None) -> bool:
        """Whether ``final/`` exists (and, given ``total_steps``, holds at least that many steps)."""
        if not (self.final / STATE_JSON).is_file():
            return False
        return total_steps is None or self.final_step() >= total_steps

    def final_step(self) -> int:
        return int(json.loads((self.final / STATE_JSON).read_text())["step"])

    def latest(self) -> tuple[int, Path] | None:
        """The newest checkpoint to resume from: ``final`` when the run finished, else the newest step."""
        steps = self.step_checkpoints()
        if self.finished() and (not steps or self.final_step() >= steps[-1][0]):
            return self.final_step(), self.final
        return steps[-1] if steps else None

    # -- logs ---------------------------------------------------------------------------------------------------------

    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        path = self.root / name
        if not path.exists():
            return []
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill: everything before it is intact
                break
        return rows

    def truncate_logs(self, step: int) -> None:
        """Drop log lines past ``step`` (written after the checkpoint a resumed run starts from)."""
        for name in ("history.jsonl", "eval.jsonl"):
            rows = [r for r in self.read_jsonl(name) if r.get("step", 0) <= step]
            path = self.root / name
            if path.exists():
                tmp = path.with_name(f".{name}.tmp")
                tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
                os.replace(tmp, path)

    def append(self, name: str, row: dict[str, Any]) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, default=_plain) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def write_skipped(self, skipped: list[dict[str, Any]]) -> None:
        path = self.root / "skipped.jsonl"
        tmp = path.with_name(".skipped.jsonl.tmp")
        tmp.write_text("".join(json.dumps(s) + "\n" for s in skipped), encoding="utf-8")
        os.replace(tmp, path)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def save_checkpoint(
    run: RunFolder,
    tm: TrainModel,
    name: str,
    state: dict[str, Any],
    info: dict[str, Any],
    max_keep: int | None = None,
) -> Path:
    """Save model + processor + trainer state as ``checkpoints/<name>`` atomically; rotate old step checkpoints."""
    import torch

    run.checkpoints.mkdir(parents=True, exist_ok=True)
    target = run.checkpoints / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.saving-", dir=run.checkpoints))
    try:
        staging.chmod(0o755)
        if tm.lora:
            tm.base().save_pretrained(staging, state_dict=_merged_state_dict(tm.model), safe_serialization=True)
            tm.model.save_pretrained(staging / ADAPTER_DIR)
        else:
            tm.model.save_pretrained(staging, safe_serialization=True)
        tm.processor.save_pretrained(staging)
        torch.save(state, staging / STATE_FILE)
        _atomic_json(staging / STATE_JSON, info)  # written last: its presence marks a complete checkpoint
        if target.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=run.checkpoints))
            os.replace(target, trash / "old")
            os.replace(staging, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    if max_keep is not None and max_keep > 0:
        steps = run.step_checkpoints()
        for _, old in steps[: max(0, len(steps) - max_keep)]:
            shutil.rmtree(old, ignore_errors=True)
    for leftover in run.checkpoints.glob(".*.saving-*"):  # from runs killed mid-save
        shutil.rmtree(leftover, ignore_errors=True)
    return target


def load_trainer_state(path: Path) -> dict[str, Any]:
    """The optimizer, scheduler, RNG and step state saved with checkpoint ``path``."""
    import torch

    try:
        return torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as exc:
        raise RecipeError(
            f"cannot read the trainer state of checkpoint {path} ({exc.__class__.__name__})",
            hint="remove that checkpoint folder to resume from the one before it, or restart the run",
        ) from exc


def run_settings(cfg: Any, data: dict[str, str] | None = None) -> dict[str, Any]:
    """The settings recorded in ``run.json``: the whole config as plain data plus digests of the datasets' contents
    (so relabelled data in the same folder counts as a different run)."""
    settings = json.loads(json.dumps(to_dict(cfg), default=str))
    settings.setdefault("local", {}).update(local_extras(cfg))
    if data:
        settings["data"] = dict(data)
    return settings


def set_dotted(mapping: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c = value`` in a nested mapping (creating tables on the way)."""
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"bad setting name '{key}'", hint="use dotted TOML names such as train.optm_lr")
    node = mapping
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set '{key}': '{part}' is a value, not a table")
        node = child
    node[parts[-1]] = value


# [local] keys the trainers read that recipe_lib.train.config does not define (yet): name -> (default, allowed values).
# ``batch_order``: "shuffle" (a seeded permutation per epoch) or "balanced" (every batch holds the labels in equal
# shares; see recipe_lib.train.sft.balanced_batches).
LOCAL_EXTRAS: dict[str, tuple[Any, tuple[Any, ...]]] = {"batch_order": ("shuffle", ("shuffle", "balanced"))}


def training_config(mapping: dict[str, Any], kind: str | None = None, where: str = "config") -> Any:
    """A strict SFT/GRPO config (:func:`recipe_lib.train.config.training_config_from_mapping`) that also accepts the
    ``[local]`` keys of :data:`LOCAL_EXTRAS`; they are set on ``cfg.local`` as attributes."""
    import copy
    import dataclasses as dc

    from recipe_lib.train.config import LocalConfig, training_config_from_mapping

    mapping = copy.deepcopy(dict(mapping))
    local = dict(mapping.get("local") or {})
    known = {f.name for f in dc.fields(LocalConfig)}
    extras = {k: local.pop(k) for k in list(local) if k in LOCAL_EXTRAS and k not in known}
    mapping["local"] = local
    cfg = training_config_from_mapping(mapping, kind, where)
    for key, (default, allowed) in LOCAL_EXTRAS.items():
        if key in known:
            continue
        value = extras.get(key, default)
        if value not in allowed:
            raise ConfigError(
                f"{where}.local.{key}: {value!r} is not one of {', '.join(map(repr, allowed))}",
            )
        setattr(cfg.local, key, value)
    return cfg


def local_extras(cfg: Any) -> dict[str, Any]:
    """The :data:`LOCAL_EXTRAS` values of a config (their defaults when it was built without them)."""
    return {key: getattr(cfg.local, key, default) for key, (default, _) in LOCAL_EXTRAS.items()}


def apply_overrides(mapping: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """A deep copy of ``mapping`` with dotted ``overrides`` applied (``{"train.optm_lr": 2e-3}``)."""
    import copy

    out = copy.deepcopy(mapping)
    for key, value in (overrides or {}).items():
        set_dotted(out, key, value)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# logging


class Logger:
    """Per-step scalars to ``history.jsonl`` and TensorBoard (when the tensorboard package is present)."""

    def __init__(self, run: RunFolder, tensorboard_dir: str | None, start_step: int) -> None:
        self.run = run
        self.writer = None
        tb = resolve_path(tensorboard_dir) if tensorboard_dir else run.root / "tensorboard"
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover - tensorboard is a dependency
            return
        # purge_step drops events a killed run logged after the checkpoint this run resumes from.
        self.writer = SummaryWriter(str(tb), purge_step=start_step + 1 if start_step else None)
        self.tensorboard_dir = tb

    def log(self, step: int, scalars: dict[str, float], file: str = "history.jsonl", prefix: str = "train") -> None:
        row = {"step": step, **{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in scalars.items()}}
        self.run.append(file, row)
        if self.writer is not None:
            for key, value in scalars.items():
                if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                    self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def progress_enabled(progress: bool) -> bool:
    """Whether to draw progress bars: asked for, and not switched off with ``TQDM_DISABLE`` (headless notebook runs)."""
    return progress and os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("1", "true", "yes")


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


def restore_trainer_state(resume_from: Path | None, optimizer: Any, scheduler: Any, run: Any) -> int:
    """Load optimizer, scheduler and RNG state from the checkpoint ``resume_from`` (if any), cut the run's logs back
    to its step, and return that step (0 for a fresh run)."""
    if resume_from is None:
        return 0
    state = load_trainer_state(resume_from)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    start = int(state["step"])
    run.truncate_logs(start)
    return start
