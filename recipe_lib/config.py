"""Typed configuration: strict loading of dataclasses from TOML/mappings, and the two profiles.

Profiles
--------
``demo``  the embedded tiny Qwen2.5-VL critic (built locally), synthetic known-truth clips, CPU, everything under
          ``build/``. Runs on a fresh machine with no GPU and no hub access.
``full``  ``nvidia/Cosmos-Reason1-7B`` (hub id or a local path), VideoPhy-2 from the hub, GPUs.

Every stage takes a dataclass config; :func:`from_mapping` builds one from a mapping and rejects unknown keys with the
closest valid name, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from recipe_lib.errors import ConfigError
from recipe_lib.resources import CONFIGS_DIR as CONFIGS_DIR  # re-exported: the folders are located in resources
from recipe_lib.resources import PROMPTS_DIR as PROMPTS_DIR
from recipe_lib.resources import REPO_ROOT, default_build_dir
from recipe_lib.validation import check_fields

T = TypeVar("T")


def build_dir() -> Path:
    """Where results land (``$PLAUSIBILITY_BUILD_DIR``, else ``<repo>/build``, or ``./build`` when installed)."""
    return Path(os.environ.get("PLAUSIBILITY_BUILD_DIR", default_build_dir())).resolve()


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(exc.message)
        raise ConfigError(f"{where}: {value!r} does not fit {hint}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table of settings, got {type(value).__name__}")
        return from_mapping(hint, value, where)  # type: ignore[arg-type]
    if hint is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"{where}: expected a path string, got {value!r}")
        return Path(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    return value


def from_mapping(cls: type[T], mapping: Mapping[str, Any], where: str | None = None) -> T:
    """Build dataclass ``cls`` from ``mapping``; unknown keys and wrong types raise :class:`ConfigError`."""
    where = where or cls.__name__
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: expected a table of settings, got {type(mapping).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = [k for k in mapping if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(fields), n=1)
        suggestion = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(fields))}"
        raise ConfigError(f"{where}: unknown key '{key}'", hint=suggestion)
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in mapping.items()}
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key '{missing[0]}'")
    return cls(**kwargs)


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file (safe: TOML has no code execution) with a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc


def to_dict(obj: Any) -> Any:
    """A JSON-friendly dict of a dataclass (paths become strings)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def _help(default: Any, help: str) -> Any:
    """A dataclass field with its help text (the command-line flags built from the class show it)."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class VideoSettings:
    """How a clip is sampled for the critic (the keys Qwen2.5-VL reads from a video message).

    ``total_pixels`` bounds frames x height x width over the whole clip; ``max_pixels`` bounds one frame.
    The defaults are the seed recipe's inference settings (fps 16, total_pixels 8192*28*28, as its scoring script
    passes them); its GRPO rollouts use fps 1 and max_pixels 81920.
    """

    fps: float = _help(16.0, "frames per second sampled from each clip")
    total_pixels: int | None = _help(8192 * 28 * 28, "cap on frames x pixels over the clip")
    max_pixels: int | None = _help(None, "cap on pixels of one frame")
    min_pixels: int | None = _help(None, "floor on pixels of one frame")
    max_frames: int = _help(768, "cap on frames per clip")

    def __post_init__(self) -> None:
        check_fields(self)


@dataclasses.dataclass
class SamplingSettings:
    """Decoding settings for ``generate`` mode. The defaults are the seed recipe's scoring script's (temperature 0.6,
    top_k 50, top_p 0.95, repetition_penalty 1.05, max_tokens 4096, seed 1) — the only sampling settings the recipe
    gives for scoring VideoPhy-2, which it uses for the zero-shot critic and, by its text, for its SFT and GRPO
    checkpoints alike ("using the same metrics")."""

    temperature: float = _help(0.6, "sampling temperature")
    top_k: int = _help(50, "sample among the k most likely tokens")
    top_p: float = _help(0.95, "sample among the most likely tokens holding this share of probability")
    repetition_penalty: float = _help(1.05, "penalty on tokens already generated")
    max_new_tokens: int = _help(4096, "cap on answer tokens")
    seed: int = _help(1, "sampling seed")
    trials: int = _help(1, "answers sampled per clip")

    def __post_init__(self) -> None:
        check_fields(self)


def with_fields(settings: T, values: Mapping[str, Any], where: str = "settings") -> T:
    """A copy of dataclass ``settings`` with the fields in ``values`` replaced (None values are left out); an unknown
    field is a :class:`ConfigError` naming the closest valid one."""
    names = [f.name for f in dataclasses.fields(settings)]  # type: ignore[arg-type]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            raise ConfigError(
                f"{where}: unknown setting '{key}'",
                hint=f"did you mean '{close[0]}'?" if close else f"valid: {', '.join(names)}",
            )
    return dataclasses.replace(settings, **{k: v for k, v in values.items() if v is not None})  # type: ignore[type-var]


@dataclasses.dataclass
class ScoringProtocol:
    """The video and sampling settings a scoring run used, and where each came from.

    ``video_from`` / ``sampling_from`` name the source of every field: ``flag`` (set explicitly: a command-line option
    or an override in a config), ``critic`` (what the critic calls for: the demo critic gets the demo profile's
    settings, any other critic the recipe's — :func:`recipe_lib.profiles.critic_settings`), or what the caller named
    when it passed settings of its own (``eval conversations``, ``given``). ``critic`` is ``demo`` or ``recipe`` and
    ``reason`` says how that was decided. ``sampling_used`` is False in ``expected`` mode, which decodes nothing.
    """

    video: VideoSettings
    sampling: SamplingSettings
    video_from: dict[str, str]
    sampling_from: dict[str, str]
    critic: str
    reason: str
    sampling_used: bool = True

    @staticmethod
    def _source(sources: dict[str, str]) -> str:
        """One word when every field has the same source, else ``critic, fps/max_frames from flag``."""
        kinds = list(dict.fromkeys(sources.values()))
        if len(kinds) == 1:
            return kinds[0]
        base = max(kinds, key=lambda k: sum(v == k for v in sources.values()))
        rest = [f"{'/'.join(f for f, v in sources.items() if v == k)} from {k}" for k in kinds if k != base]
        return ", ".join([base, *rest])

    @property
    def video_source(self) -> str:
        return self._source(self.video_from)

    @property
    def sampling_source(self) -> str:
        return self._source(self.sampling_from)

    def to_json(self) -> dict[str, Any]:
        return {
            "critic": self.critic,
            "critic_reason": self.reason,
            "video": to_dict(self.video),
            "video_source": self.video_source,
            "video_from": dict(self.video_from),
            "sampling": to_dict(self.sampling) if self.sampling_used else None,
            "sampling_source": self.sampling_source if self.sampling_used else "not used (expected mode)",
            "sampling_from": dict(self.sampling_from) if self.sampling_used else {},
        }

    def describe(self) -> str:
        """One line: the settings and their sources (what the commands print and the reports show)."""
        v = self.video
        parts = [f"fps {v.fps:g}", f"max_frames {v.max_frames}"]
        parts += [f"{k} {getattr(v, k)}" for k in ("total_pixels", "max_pixels", "min_pixels") if getattr(v, k)]
        line = f"video {', '.join(parts)} (from {self.video_source}; {self.reason})"
        if not self.sampling_used:
            return line + "; sampling: none (expected mode)"
        s = self.sampling
        return (
            f"{line}; sampling temperature {s.temperature:g}, top_k {s.top_k}, top_p {s.top_p:g}, "
            f"repetition_penalty {s.repetition_penalty:g}, max_new_tokens {s.max_new_tokens}, seed {s.seed}, "
            f"trials {s.trials} (from {self.sampling_source})"
        )


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


def apply_overrides(mapping: dict[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """A deep copy of ``mapping`` with dotted ``overrides`` applied (``{"train.optm_lr": 2e-3}``)."""
    import copy

    out = copy.deepcopy(mapping)
    for key, value in (overrides or {}).items():
        set_dotted(out, key, value)
    return out
