"""Load a critic (processor + model) from a local folder or a hub id, with user mistakes turned into RecipeErrors.

The demo critic (a folder built by :func:`recipe_lib.models.tiny.build_tiny_critic`) and
``nvidia/Cosmos-Reason1-7B`` go through the same code path: ``AutoProcessor`` and ``AutoModelForImageTextToText``.

A LoRA adapter folder (PEFT's ``adapter_config.json`` + ``adapter_model.safetensors``, as the in-process trainers'
LoRA checkpoints are) loads too: its base model (:func:`adapter_base`) is loaded the same way, the adapter is applied
with ``PeftModel.from_pretrained`` and merged in memory, so the caller gets a plain model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

from recipe_lib.errors import RecipeError

DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}

# owner/name (or a bare legacy name); the characters the hub allows in repository ids.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

_OFFLINE_HINT = (
    "pass a local folder instead (for example the folder written by `hf download {model} --local-dir DIR` "
    "on a machine with network), or set HF_HUB_OFFLINE=1 if the model is already in the Hugging Face cache"
)


@dataclasses.dataclass
class LoadedCritic:
    """A critic ready for inference: the model (in eval mode), its processor, and where it runs."""

    model: Any
    processor: Any
    name: str
    device: str
    dtype: str = "float32"


def resolve_device(device: str = "auto") -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``; a GPU that is not there is a RecipeError."""
    import torch

    device = device.strip().lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if match:
        if not torch.cuda.is_available():
            raise RecipeError(
                f"device '{device}' was asked for but no CUDA GPU is visible", hint="use --device cpu (or auto)"
            )
        index = int(match.group(1) or 0)
        if index >= torch.cuda.device_count():
            raise RecipeError(
                f"device '{device}' does not exist: {torch.cuda.device_count()} GPU(s) visible",
                hint="pick cuda:0 .. cuda:N-1, or check CUDA_VISIBLE_DEVICES",
            )
        return device
    if device == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise RecipeError("device 'mps' was asked for but Apple MPS is not available", hint="use --device cpu")
        return device
    raise RecipeError(f"unknown device '{device}'", hint="use auto, cpu, cuda, cuda:N or mps")


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto`` becomes ``bfloat16`` on a GPU and ``float32`` elsewhere; aliases such as ``bf16`` are accepted."""
    key = dtype.strip().lower()
    if key == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    if key not in DTYPES:
        raise RecipeError(f"unknown dtype '{dtype}'", hint="use auto, float32, bfloat16 or float16")
    return DTYPES[key]


def _local_folder(model: str) -> Path | None:
    """The local folder ``model`` names, ``None`` for a hub id; a path-like string that does not exist raises."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise RecipeError(
                f"model path {path} is a file, not a model folder",
                hint="pass the folder that holds config.json and the weights",
            )
        return path.resolve()
    path_like = model.startswith(("/", ".", "~")) or "\\" in model or not _HUB_ID.match(model)
    if path_like:
        from recipe_lib.models.tiny import demo_model_dir

        hint = "check the path, or pass a hub id such as nvidia/Cosmos-Reason1-7B"
        if Path(os.path.realpath(path)) == demo_model_dir():
            hint = "build the demo critic first: `plausibility tiny-model` (or `make demo`)"
        raise RecipeError(f"model folder not found: {path}", hint=hint)
    return None


def is_adapter_folder(model: str | os.PathLike[str]) -> bool:
    """Whether ``model`` is a local folder holding a PEFT adapter (``adapter_config.json``) and no full model."""
    try:
        folder = Path(model).expanduser()
        return (folder / ADAPTER_CONFIG).is_file() and not (folder / "config.json").is_file()
    except (OSError, ValueError):
        return False


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read {path} ({exc.__class__.__name__})", hint=f"restore {what}") from exc
    if not isinstance(data, dict):
        raise RecipeError(f"{path} is not a JSON object", hint=f"restore {what}")
    return data


def _usable(model: str) -> bool:
    """A base named by a local folder that exists, or by a hub id."""
    path = Path(model).expanduser()
    if path.exists():
        return True
    return not model.startswith(("/", ".", "~")) and "\\" not in model and bool(_HUB_ID.match(model))


def adapter_base(folder: str | os.PathLike[str]) -> str:
    """The base model of the adapter folder ``folder``: ``base_model_name_or_path`` of its ``adapter_config.json``
    when that folder exists (or is a hub id), else ``policy.model_name_or_path`` of the ``run.json`` of the training
    run it belongs to (``<run>/checkpoints/<name>``: a run folder that was moved). Neither: a RecipeError naming both.
    """
    from recipe_lib.config import resolve_model

    folder = Path(folder).expanduser().resolve()
    named = _read_json(folder / ADAPTER_CONFIG, "adapter_config.json from the checkpoint").get(
        "base_model_name_or_path"
    )
    tried = []
    if isinstance(named, str) and named.strip():
        if _usable(named):
            return named
        tried.append(f"{named} (adapter_config.json)")
    run_json = folder.parent.parent / "run.json"
    if run_json.is_file():
        settings = _read_json(run_json, "run.json of the training run")
        start = (settings.get("policy") or {}).get("model_name_or_path")
        if isinstance(start, str) and start.strip():
            resolved = resolve_model(start)
            if _usable(resolved):
                return resolved
            tried.append(f"{resolved} ({run_json})")
    raise RecipeError(
        f"the base model of the LoRA adapter {folder} is not there: "
        + ("; ".join(tried) if tried else "adapter_config.json names none and no run.json lies beside it"),
        hint="put the base model back at that path (or set base_model_name_or_path in adapter_config.json), or "
        "merge the adapter where the base exists: plausibility merge CHECKPOINT --out DIR",
    )


def _check_folder(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise RecipeError(
            f"{folder} has no config.json, so it is not a Hugging Face model folder",
            hint="pass the folder that holds config.json, the *.safetensors weights and the tokenizer files "
            "(for a hub cache entry: .../snapshots/<revision>)",
        )
    check_config_json(folder / "config.json")
    for weights in sorted(folder.glob("*.safetensors")):
        check_safetensors(weights)


def check_config_json(path: Path) -> None:
    """``config.json`` must be a JSON object naming a model type (blamed on itself, not on the processor files)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecipeError(
            f"{path} is not valid JSON ({exc})", hint="restore config.json from the checkpoint you downloaded"
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise RecipeError(
            f"{path} is not a model configuration (a JSON object with a 'model_type')",
            hint="restore config.json from the checkpoint you downloaded",
        )


def check_safetensors(path: Path) -> None:
    """A safetensors file is whole: its header parses and every tensor's bytes lie inside the file (a download or
    copy cut short fails here with the file named, never as a traceback in the middle of loading)."""
    size = path.stat().st_size
    hint = "the weights file is truncated or damaged; download or copy it again"
    with path.open("rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n <= 0 or 8 + n > size:
            raise RecipeError(f"{path} is not a whole safetensors file ({size} bytes, no complete header)", hint=hint)
        try:
            header = json.loads(fh.read(n))
        except (ValueError, UnicodeDecodeError) as exc:
            raise RecipeError(f"{path} has a damaged safetensors header", hint=hint) from exc
    if not isinstance(header, dict):
        raise RecipeError(f"{path} has a damaged safetensors header", hint=hint)
    end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise RecipeError(
            f"{path} is truncated: its tensors need {8 + n + end} bytes but the file has {size}", hint=hint
        )


def _names(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown} and {len(keys) - limit} more" if len(keys) > limit else shown


def check_loading_info(name: str, info: dict[str, Any], allow_missing_weights: bool = False) -> None:
    """Every weight of the model came from the checkpoint and every tensor of the checkpoint was used: a checkpoint
    lacking (say) the vision tower would otherwise run with random weights and give different scores every run."""
    if allow_missing_weights:
        return
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(info.get("unexpected_keys") or [])
    mismatched = sorted(str(k[0] if isinstance(k, tuple | list) else k) for k in info.get("mismatched_keys") or [])
    hint = "the weights do not belong to this config.json; use the checkpoint's own files (or a complete download)"
    if missing:
        raise RecipeError(
            f"'{name}' lacks {len(missing)} weight tensor(s) the model needs: {_names(missing)}", hint=hint
        )
    if mismatched:
        raise RecipeError(
            f"'{name}' has {len(mismatched)} tensor(s) of the wrong shape: {_names(mismatched)}", hint=hint
        )
    if unexpected:
        raise RecipeError(
            f"'{name}' holds {len(unexpected)} tensor(s) the model does not use: {_names(unexpected)}", hint=hint
        )


def _hub_source(model: str) -> bool:
    """Check that a hub id can be used; return True when it must be read from the local cache only.

    One quick metadata request avoids transformers' minutes of download retries when the hub is unreachable.
    """
    import huggingface_hub
    from huggingface_hub import constants

    cached = isinstance(huggingface_hub.try_to_load_from_cache(model, "config.json"), str)
    # The environment is read again here: huggingface_hub reads it once, when first imported.
    offline = constants.HF_HUB_OFFLINE or any(
        os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    if offline:
        if not cached:
            raise RecipeError(
                f"'{model}' is not a local folder and is not in the Hugging Face cache (HF_HUB_OFFLINE is set)",
                hint=_OFFLINE_HINT.format(model=model),
            )
        return True
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        huggingface_hub.model_info(model, timeout=15)
    except GatedRepoError as exc:
        raise RecipeError(
            f"'{model}' is a gated repository on the hub",
            hint="accept its license on huggingface.co and log in with `hf auth login`, or pass a local folder",
        ) from exc
    except RepositoryNotFoundError as exc:
        raise RecipeError(
            f"'{model}' is neither a local folder nor a model on the Hugging Face hub",
            hint="check the spelling (for example nvidia/Cosmos-Reason1-7B) or the path of a local folder",
        ) from exc
    except OSError as exc:  # no network, DNS failure, timeout, proxy errors
        if cached:
            return True
        raise RecipeError(
            f"could not reach the Hugging Face hub to fetch '{model}' ({type(exc).__name__})",
            hint=_OFFLINE_HINT.format(model=model),
        ) from exc
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_critic(
    model: str | os.PathLike[str],
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    allow_missing_weights: bool = False,
) -> LoadedCritic:
    """Load processor and model from a local folder or a hub id (e.g. ``nvidia/Cosmos-Reason1-7B``).

    ``device``: auto | cpu | cuda | cuda:N | mps. ``dtype``: auto (bfloat16 on GPU, float32 on CPU) | float32 |
    bfloat16 | float16. ``trust_remote_code`` is only passed on when asked. The model is returned in eval mode.
    Missing, unexpected or mis-shaped tensors are an error naming them unless ``allow_missing_weights``.
    """
    model_str = os.fspath(model).strip()
    if not model_str:
        raise RecipeError("no model given", hint="pass a model folder or a hub id such as nvidia/Cosmos-Reason1-7B")
    if is_adapter_folder(model_str):
        return _load_adapter_critic(Path(model_str).expanduser().resolve(), device, dtype, trust_remote_code,
                                    attn_implementation)  # fmt: skip
    folder = _local_folder(model_str)
    if folder is not None:
        _check_folder(folder)
        source, name, local_only = str(folder), str(folder), True
    else:
        source, name = model_str, model_str
        local_only = _hub_source(model_str)

    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)

    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    common: dict[str, Any] = {"trust_remote_code": trust_remote_code, "local_files_only": local_only}
    try:
        processor = AutoProcessor.from_pretrained(source, **common)
    except (OSError, ValueError, KeyError) as exc:
        raise RecipeError(
            f"could not load the processor of '{name}': {_first_line(exc)}",
            hint="the folder needs the tokenizer files and preprocessor_config.json of a Qwen2.5-VL checkpoint",
        ) from exc
    if not hasattr(processor, "video_processor"):
        raise RecipeError(
            f"'{name}' has no video processor ({type(processor).__name__}), so it cannot read videos",
            hint="use a video-language checkpoint such as nvidia/Cosmos-Reason1-7B",
        )

    model_kwargs: dict[str, Any] = {**common, "dtype": getattr(torch, resolved_dtype)}
    if attn_implementation is not None:
        model_kwargs["attn_implementation"] = attn_implementation
    if resolved_device.startswith("cuda"):
        model_kwargs["device_map"] = {"": resolved_device}
    try:
        loaded, info = AutoModelForImageTextToText.from_pretrained(source, output_loading_info=True, **model_kwargs)
    except ImportError as exc:
        raise RecipeError(
            f"could not load '{name}': {_first_line(exc)}",
            hint="install the missing package, or drop --attn-implementation (sdpa is the default)",
        ) from exc
    except (OSError, ValueError, KeyError) as exc:
        raise RecipeError(
            f"could not load the model of '{name}': {_first_line(exc)}",
            hint="the folder needs config.json and *.safetensors weights of an image-text-to-text model "
            "(Qwen2.5-VL / Cosmos-Reason1)",
        ) from exc
    check_loading_info(name, info, allow_missing_weights)
    if not resolved_device.startswith("cuda"):
        loaded = loaded.to(resolved_device)
    from recipe_lib.models import positions

    positions.install(loaded)  # Qwen2.5-VL: fractional seconds per grid kept on the time axis, as vLLM does
    loaded.eval()
    return LoadedCritic(model=loaded, processor=processor, name=name, device=resolved_device, dtype=resolved_dtype)


def _load_adapter_critic(
    folder: Path, device: str, dtype: str, trust_remote_code: bool, attn_implementation: str | None
) -> LoadedCritic:
    """The base model of the adapter in ``folder`` with the adapter merged in (see the module docstring); the
    processor is the folder's own when it holds one (a training checkpoint does), else the base's."""
    weights = folder / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise RecipeError(
            f"{folder} has adapter_config.json but no {ADAPTER_WEIGHTS}",
            hint="the checkpoint is incomplete: copy it again, or resume from the one before it",
        )
    check_safetensors(weights)
    base = load_critic(adapter_base(folder), device, dtype, trust_remote_code, attn_implementation)
    from peft import PeftModel

    try:
        wrapped = PeftModel.from_pretrained(base.model, str(folder), is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise RecipeError(
            f"the LoRA adapter {folder} does not fit its base model {base.name}: {_first_line(exc)}",
            hint="the adapter was trained on another model; name the right base in adapter_config.json",
        ) from exc
    merged = wrapped.merge_and_unload()
    merged.eval()
    processor = base.processor
    if any((folder / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")):
        from transformers import AutoProcessor

        try:
            processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise RecipeError(
                f"could not load the processor of '{folder}': {_first_line(exc)}",
                hint="restore the checkpoint's tokenizer files, or remove its preprocessor_config.json to use the "
                "base model's processor",
            ) from exc
    return LoadedCritic(model=merged, processor=processor, name=str(folder), device=base.device, dtype=base.dtype)
