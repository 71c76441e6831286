"""The cosmos-rl path: render and validate multi-GPU configs, check what a launch needs, and launch.

cosmos-rl runs a user script under its own launcher::

    cosmos-rl --config run.toml recipe_lib/train/cosmos_entry/sft_entry.py

The shipped configs (``configs/full/{sft,custom_sft,grpo}.toml``) carry the recipe's numbers for 8 GPUs;
:func:`render_config` adapts one to a model, a dataset, a GPU count and an output folder, and checks the result with
cosmos-rl's own ``Config`` plus a strict pass that rejects keys cosmos-rl would silently ignore (pydantic drops unknown
keys, so a misspelt ``optm_lr`` would otherwise train with the default). cosmos-rl is imported lazily: importing this
module costs nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import math
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any

from recipe_lib.config import CONFIGS_DIR, REPO_ROOT, from_mapping, load_toml
from recipe_lib.errors import ConfigError, RecipeError
from recipe_lib.io import atomic_write_text, printable
from recipe_lib.train.config import GRPOCustomConfig, SFTCustomConfig, from_cosmos_mapping

FULL_CONFIG_DIR = CONFIGS_DIR / "full"
ENTRY_DIR = Path(__file__).resolve().parent / "cosmos_entry"
KINDS = ("sft", "custom_sft", "grpo")
ENTRIES = {
    "sft": ENTRY_DIR / "sft_entry.py",
    "custom_sft": ENTRY_DIR / "sft_entry.py",
    "grpo": ENTRY_DIR / "grpo_entry.py",
}
# Qwen2.5-VL-7B has 28 attention heads and 4 key/value heads: vLLM tensor parallel must divide 4.
ROLLOUT_TP_CHOICES = (1, 2, 4)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"unknown cosmos-rl config kind '{kind}'", hint=f"use one of: {', '.join(KINDS)}")


def base_config(kind: str) -> dict[str, Any]:
    """The shipped ``configs/full/<kind>.toml`` as a dict."""
    _check_kind(kind)
    return load_toml(FULL_CONFIG_DIR / f"{kind}.toml")


def training_kind(mapping: dict[str, Any]) -> str:
    """``sft`` or ``grpo`` from ``train.train_policy.type``."""
    kind = mapping.get("train", {}).get("train_policy", {}).get("type")
    if kind not in ("sft", "grpo"):
        raise ConfigError('config has no [train.train_policy] type = "sft" or "grpo"')
    return kind


def parallelism_for(kind: str, n_gpus: int) -> dict[str, dict[str, Any]]:
    """How ``n_gpus`` GPUs of one node are used.

    SFT: one policy replica sharded (FSDP) over every GPU. GRPO: half the GPUs shard the policy, the other half run
    one vLLM rollout replica with tensor parallel (the recipe's 4 + 4 on 8 GPUs; 2 + 2 on 4; 1 + 1 on 2, where the
    policy's optimizer state is offloaded to CPU memory to fit one GPU). GRPO on one GPU is refused: cosmos-rl
    0.4.7's ``colocated`` mode fails in its vLLM rollout (``set_underlying_model`` is not implemented), as run on an
    H200 on 2026-12-02 (``benchmarks/results/h200-2026-12-02/``).
    """
    _check_kind(kind)
    if isinstance(n_gpus, bool) or not isinstance(n_gpus, int) or n_gpus < 1:
        raise ConfigError(f"number of GPUs must be a positive whole number, got {n_gpus!r}")
    if kind != "grpo":
        return {"policy": {"tp_size": 1, "cp_size": 1, "pp_size": 1, "dp_replicate_size": 1, "dp_shard_size": n_gpus}}
    if n_gpus == 1:
        raise ConfigError(
            "GRPO needs 2, 4 or 8 GPUs on one node, got 1",
            hint="cosmos-rl 0.4.7 cannot share one GPU between policy and vLLM rollout: its colocated mode stops with "
            "'set_underlying_model is not implemented yet' in the vLLM rollout (H200, 2026-12-02)",
        )
    half = n_gpus // 2
    if n_gpus % 2 or half not in ROLLOUT_TP_CHOICES:
        raise ConfigError(
            f"GRPO needs 2, 4 or 8 GPUs on one node, got {n_gpus}",
            hint="half the GPUs train the policy and half generate rollouts (vLLM tensor parallel 1, 2 or 4)",
        )
    return {
        "policy": {"tp_size": 1, "cp_size": 1, "pp_size": 1, "dp_replicate_size": 1, "dp_shard_size": half},
        "rollout": {"tp_size": half, "pp_size": 1},
    }


def gpus_needed(mapping: dict[str, Any]) -> int:
    """GPUs a config asks for on one node (policy replicas, plus rollout replicas for GRPO)."""

    def size(par: dict[str, Any], default_tp: int) -> int:
        n = par.get("tp_size", default_tp) * par.get("cp_size", 1) * par.get("pp_size", 1)
        n *= par.get("dp_replicate_size", 1) * max(par.get("dp_shard_size", 1), 1)
        return n * par.get("n_init_replicas", 1)

    total = size(mapping.get("policy", {}).get("parallelism", {}), 2)
    if training_kind(mapping) == "grpo":
        total += size(mapping.get("rollout", {}).get("parallelism", {}), 2)
    return total


def _local_or_id(value: str | Path) -> str:
    """An existing local path made absolute (workers may start elsewhere); anything else (a hub id) as given."""
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else str(value)


def render_config(
    kind: str,
    model: str | Path | None = None,
    dataset: str | Path | None = None,
    n_gpus: int | None = None,
    output_dir: str | Path | None = None,
    eval_dataset: str | Path | None = None,
    validate: bool = True,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The shipped config of ``kind`` with overrides applied, checked through cosmos-rl's ``Config``.

    ``model``: hub id or local folder. ``dataset`` / ``eval_dataset``: conversation datasets on disk (made absolute
    when they exist here). ``n_gpus``: see :func:`parallelism_for`. ``output_dir``: where cosmos-rl writes
    checkpoints (it adds a timestamped folder per run). ``settings``: dotted cosmos-rl keys set last, e.g.
    ``{"train.max_num_steps": 10}`` for a smoke run (checked like the rest).
    """
    cfg = base_config(kind)
    if model is not None:
        cfg["policy"]["model_name_or_path"] = _local_or_id(model)
    if dataset is not None:
        cfg.setdefault("custom", {}).setdefault("dataset", {})["path"] = _local_or_id(dataset)
    if eval_dataset is not None:
        cfg.setdefault("custom", {})["eval_dataset"] = {"path": _local_or_id(eval_dataset)}
        cfg.setdefault("validation", {})["enable"] = True
    if output_dir is not None:
        cfg["train"]["output_dir"] = str(Path(output_dir).expanduser().resolve())
    if n_gpus is not None:
        split = parallelism_for(kind, n_gpus)
        cfg["policy"].setdefault("parallelism", {}).update(split["policy"])
        if "rollout" in split:
            cfg.setdefault("rollout", {}).setdefault("parallelism", {}).update(split["rollout"])
            # One GPU for the whole policy: shard nothing, keep parameters and optimizer state in CPU memory.
            cfg["train"]["fsdp_offload"] = split["policy"]["dp_shard_size"] == 1
    if settings:
        from recipe_lib.config import apply_overrides

        cfg = apply_overrides(cfg, settings)
    if training_kind(cfg) == "grpo":
        _one_temperature(cfg, settings or {})
    if validate:
        validate_config(cfg)
    return cfg


POLICY_TEMPERATURE = "train.train_policy.temperature"
ROLLOUT_TEMPERATURE = "rollout.sampling_config.temperature"


def _one_temperature(cfg: dict[str, Any], settings: dict[str, Any]) -> None:
    """GRPO: vLLM samples with ``rollout.sampling_config.temperature``, the trainer rescales logits by
    ``train.train_policy.temperature``; they must agree or the importance ratios are off. The one the user set (by
    ``--set``, applied before this) is copied to the other; setting both to different values is an error."""
    policy = cfg.setdefault("train", {}).setdefault("train_policy", {})
    rollout = cfg.setdefault("rollout", {}).setdefault("sampling_config", {})
    if ROLLOUT_TEMPERATURE in settings and POLICY_TEMPERATURE not in settings:
        policy["temperature"] = rollout["temperature"]
    elif POLICY_TEMPERATURE in settings and ROLLOUT_TEMPERATURE not in settings:
        rollout["temperature"] = policy["temperature"]
    elif ROLLOUT_TEMPERATURE not in settings:
        rollout["temperature"] = policy.get("temperature")


def _check_temperatures(mapping: dict[str, Any]) -> None:
    if training_kind(mapping) != "grpo":
        return
    policy = mapping.get("train", {}).get("train_policy", {}).get("temperature")
    rollout = mapping.get("rollout", {}).get("sampling_config", {}).get("temperature")
    if policy is not None and rollout is not None and policy != rollout:
        raise ConfigError(
            f"{POLICY_TEMPERATURE} = {policy!r} but {ROLLOUT_TEMPERATURE} = {rollout!r}: GRPO needs one temperature",
            hint="set one of them (the other follows) or both to the same value",
        )


def _non_finite(mapping: Any, prefix: str = "") -> str | None:
    """The dotted key of the first NaN or infinite number in ``mapping`` (TOML can write them; no setting means one)."""
    if isinstance(mapping, dict):
        for key, value in mapping.items():
            found = _non_finite(value, f"{prefix}{key}.")
            if found:
                return found
    elif isinstance(mapping, list):
        for i, value in enumerate(mapping):
            found = _non_finite(value, f"{prefix}{i}.")
            if found:
                return found
    elif isinstance(mapping, float) and not math.isfinite(mapping):
        return f"{prefix.rstrip('.')} = {mapping}"
    return None


# --------------------------------------------------------------------------------------------------------------------
# validation


def _cosmos_config_class() -> Any:
    try:
        from cosmos_rl.policy.config import Config
    except ImportError as exc:
        raise RecipeError("cosmos-rl is not installed", hint="pip install -e '.[cosmos]' (cosmos-rl==0.4.7)") from exc
    return Config


def _submodel(annotation: Any, value: Any) -> Any:
    """The pydantic model class a table value is checked against (None for plain values and free-form dicts)."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    candidates = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1 and isinstance(value, dict):
        for cand in candidates:
            type_field = cand.model_fields.get("type")
            if type_field is not None and value.get("type") in typing.get_args(type_field.annotation):
                return cand
    return None


def unknown_keys(model_cls: Any, mapping: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of ``mapping`` that ``model_cls`` (a cosmos-rl pydantic model) does not define."""
    found: list[str] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        field = model_cls.model_fields.get(key)
        if field is None:
            found.append(name)
            continue
        if isinstance(value, dict):
            sub = _submodel(field.annotation, value)
            if sub is not None:
                found.extend(unknown_keys(sub, value, f"{name}."))
    return found


def validate_config(mapping: dict[str, Any]) -> Any:
    """Check a cosmos-rl config dict; returns the ``cosmos_rl.policy.config.Config`` it builds.

    Three checks: no key cosmos-rl would ignore; our ``[custom]`` table and the settings shared with the in-process
    trainers (strict :mod:`recipe_lib.train.config`); cosmos-rl's own ``Config.from_dict`` (on a copy: it rewrites
    ``train.output_dir`` with a timestamp).
    """
    kind = training_kind(mapping)
    bad = _non_finite(mapping)
    if bad:
        raise ConfigError(f"{bad} is not a finite number", hint="give a number (nan and inf mean no setting)")
    _check_temperatures(mapping)
    Config = _cosmos_config_class()
    extra = [k for k in unknown_keys(Config, mapping) if not k.startswith("custom.")]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise ConfigError(
            f"cosmos-rl does not know the key '{extra[0]}'{more}",
            hint=_key_hint(Config, mapping, extra[0]),
        )
    custom_cls = GRPOCustomConfig if kind == "grpo" else SFTCustomConfig
    custom = from_mapping(custom_cls, mapping.get("custom", {}), "custom")
    if not custom.dataset.path:
        raise ConfigError("custom.dataset.path is empty", hint="point it at a conversation dataset (--dataset)")
    if mapping.get("validation", {}).get("enable") and custom.eval_dataset is None:
        raise ConfigError(
            "validation.enable is true but there is no [custom.eval_dataset]",
            hint="give an eval conversation dataset (--eval-dataset) or set validation.enable = false",
        )
    from_cosmos_mapping(mapping, where="config")
    try:
        return Config.from_dict(copy.deepcopy(mapping))
    except Exception as exc:  # pydantic ValidationError or a validator's assertion
        first = str(exc).strip().splitlines()
        raise ConfigError(f"cosmos-rl rejects the config: {' '.join(first[:3])}") from exc


def _key_hint(Config: Any, mapping: dict[str, Any], dotted: str) -> str:
    import difflib

    parts = dotted.split(".")
    model, node = Config, mapping
    for part in parts[:-1]:
        field = model.model_fields.get(part)
        node = node.get(part, {}) if isinstance(node, dict) else {}
        sub = _submodel(field.annotation, node) if field is not None else None
        if sub is None:
            break
        model = sub
    close = difflib.get_close_matches(parts[-1], list(model.model_fields), n=1)
    return f"did you mean '{close[0]}'?" if close else "see cosmos_rl.policy.config for the valid keys"


def validate_config_file(path: str | Path) -> Any:
    return validate_config(load_toml(path))


def write_config(out_path: str | Path, kind: str, **overrides: Any) -> Path:
    """Render (see :func:`render_config`: ``model``, ``dataset``, ``n_gpus``, ``output_dir``, ``eval_dataset``) and
    write a TOML file atomically; ``out_path`` may be a folder."""
    import tomli_w

    cfg = render_config(kind, **overrides)
    out = Path(out_path)
    if out.suffix != ".toml":
        n_gpus = overrides.get("n_gpus")
        gpus = f"_{n_gpus}gpu" if n_gpus is not None else ""
        out = out / f"{kind}{gpus}.toml"
    header = (
        f"# cosmos-rl {kind} config rendered by recipe_lib.train.cosmos.write_config from configs/full/{kind}.toml\n"
        f"# run: cosmos-rl --config {printable(out.name)} {ENTRIES[kind].relative_to(REPO_ROOT)}\n\n"
    )
    try:
        text = tomli_w.dumps(cfg)  # strings exactly (a backslash stays a backslash, control characters escaped)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the config cannot be written as TOML: {exc}") from exc
    if tomllib.loads(text) != cfg:  # what cosmos-rl will read is what was checked, or nothing is written
        raise ConfigError("the config does not read back as written", hint="check the --set values and paths")
    return atomic_write_text(out, header + text)


# --------------------------------------------------------------------------------------------------------------------
# prerequisites and launch


# Without flash-attn our entry scripts give cosmos-rl's attention calls torch SDPA (cosmos_entry/sdpa_attention.py).
SDPA_NOTE = "our entry scripts run cosmos-rl's attention on torch SDPA instead; flash-attn is faster where it builds"


@dataclasses.dataclass
class Prerequisites:
    """What this machine has for a cosmos-rl launch; ``missing`` says what stops one (flash-attn is optional)."""

    gpus: int
    redis_server: str | None
    cosmos_rl: str | None
    vllm: bool
    flash_attn: bool
    missing: list[str]

    @property
    def ok(self) -> bool:
        return not self.missing


def cuda_gpu_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def cosmos_rl_script() -> str | None:
    """The ``cosmos-rl`` console script: next to this Python first (the venv), then on PATH."""
    local = Path(sys.executable).parent / "cosmos-rl"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("cosmos-rl")


def check_prerequisites(kind: str = "sft", n_gpus: int | None = None) -> Prerequisites:
    """What a launch of ``kind`` needs and this machine lacks (an empty ``missing`` list means ready)."""
    _check_kind(kind)
    gpus = cuda_gpu_count()
    redis = shutil.which("redis-server")
    script = cosmos_rl_script()
    vllm = importlib.util.find_spec("vllm") is not None
    from recipe_lib.train.cosmos_entry.sdpa_attention import flash_attn_installed

    flash_attn = flash_attn_installed()
    missing: list[str] = []
    if gpus == 0:
        missing.append("CUDA GPUs (none visible to torch)")
    elif n_gpus is not None and gpus < n_gpus:
        missing.append(f"{n_gpus} CUDA GPUs (only {gpus} visible)")
    if redis is None:
        missing.append("redis-server on PATH (e.g. apt-get install redis-server or conda install redis)")
    if script is None:
        missing.append("the cosmos-rl command (pip install -e '.[cosmos]')")
    if kind == "grpo" and not vllm:
        missing.append("vllm for GRPO rollouts (pip install vllm, version matching cosmos-rl 0.4.7)")
    return Prerequisites(
        gpus=gpus, redis_server=redis, cosmos_rl=script, vllm=vllm, flash_attn=flash_attn, missing=missing
    )


@dataclasses.dataclass
class LaunchResult:
    """The command, the folders put first on PATH / PYTHONPATH for it, and whether it ran."""

    command: list[str]
    env: dict[str, str]
    ran: bool
    returncode: int | None = None

    @property
    def command_line(self) -> str:
        """The command as one shell line, environment included (copy-paste ready)."""
        prefix = " ".join(f'{k}={shlex.quote(v)}:"${k}"' for k, v in self.env.items())
        return f"{prefix} {shlex.join(self.command)}"

    def environment(self) -> dict[str, str]:
        """``os.environ`` with :attr:`env` prepended."""
        full = dict(os.environ)
        for key, value in self.env.items():
            full[key] = os.pathsep.join([value, full[key]]) if full.get(key) else value
        return full


def python_dir(shim_root: str | Path | None = None) -> Path:
    """A folder whose ``python`` is this interpreter (cosmos-rl's launcher and scripts call plain ``python``): the
    interpreter's own folder when it has one (a venv), else ``<shim_root>/bin`` with a link named ``python`` (a
    machine with only ``python3``)."""
    here = Path(sys.executable).parent
    if (here / "python").exists() or shim_root is None:
        return here
    shim = Path(shim_root) / "bin"
    shim.mkdir(parents=True, exist_ok=True)
    link = shim / "python"
    if not link.exists():
        link.symlink_to(Path(sys.executable).resolve())
    return shim


def launch_env(shim_root: str | Path | None = None) -> dict[str, str]:
    """Folders put first for the launched processes: a folder with this interpreter as ``python`` on PATH
    (:func:`python_dir`), and the repository on PYTHONPATH so the entry scripts import ``recipe_lib``."""
    return {"PATH": str(python_dir(shim_root)), "PYTHONPATH": str(REPO_ROOT)}


def launch(
    config_path: str | Path,
    entry: str | Path | None = None,
    dry_run: bool = True,
    log_dir: str | Path | None = None,
) -> LaunchResult:
    """The exact cosmos-rl command for a config; runs it only when ``dry_run`` is False and prerequisites hold.

    The config is validated first. ``entry`` defaults to the entry script for the config's training kind.
    """
    config_path = Path(config_path).resolve()
    mapping = load_toml(config_path)
    validate_config(mapping)
    kind = training_kind(mapping)
    entry_path = Path(entry).resolve() if entry is not None else ENTRIES[kind]
    if not entry_path.is_file():
        raise ConfigError(f"entry script not found: {entry_path}")
    command = [cosmos_rl_script() or "cosmos-rl", "--config", str(config_path)]
    if log_dir is not None:
        command += ["--log-dir", str(Path(log_dir).resolve())]
    command.append(str(entry_path))
    if dry_run:
        return LaunchResult(command=command, env=launch_env(), ran=False)
    prereq = check_prerequisites(kind, gpus_needed(mapping))
    missing = list(prereq.missing)
    wanted = ["dataset"] + (["eval_dataset"] if mapping.get("validation", {}).get("enable") else [])
    for key in wanted:
        path = mapping["custom"].get(key, {}).get("path", "")
        if not Path(path).exists():
            missing.append(f"the {key.replace('_', ' ')} {path}")
    if missing:
        raise RecipeError(
            f"cannot launch cosmos-rl: missing {'; '.join(missing)}",
            hint="run 'plausibility cosmos check' to see what this machine has",
        )
    shim_root = Path(log_dir).resolve() if log_dir is not None else config_path.parent / ".cosmos-launch"
    result = LaunchResult(command=command, env=launch_env(shim_root), ran=True)
    proc = subprocess.run(command, env=result.environment(), check=False)
    result.returncode = proc.returncode
    return result
