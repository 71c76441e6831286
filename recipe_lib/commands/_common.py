"""Argument helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def add_profile_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        choices=["demo", "full"],
        default="demo",
        help="defaults for the critic, device and batch size (default: demo); video and sampling settings follow "
        "the critic: the demo critic's for the demo critic, the recipe's for any other",
    )


VIDEO_FLAGS = ("fps", "total_pixels", "max_pixels", "max_frames")
SAMPLING_FLAGS = ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", "trials", "seed")


def add_video_args(parser: argparse.ArgumentParser) -> None:
    """``--fps`` ... from :class:`~recipe_lib.config.VideoSettings`; unset options leave the critic's settings."""
    from recipe_lib.config import VideoSettings

    group = parser.add_argument_group("video sampling (default: the critic's)")
    add_config_args(group, VideoSettings, only=VIDEO_FLAGS, defaults=dict.fromkeys(VIDEO_FLAGS))


def add_sampling_args(parser: argparse.ArgumentParser) -> None:
    """``--temperature`` ... from :class:`~recipe_lib.config.SamplingSettings` (generate mode)."""
    from recipe_lib.config import SamplingSettings

    group = parser.add_argument_group("generation (mode=generate; default: the critic's)")
    add_config_args(group, SamplingSettings, only=SAMPLING_FLAGS, defaults=dict.fromkeys(SAMPLING_FLAGS))


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def video_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The video settings given as options (they win over the critic's; see ``ScoreConfig.video_overrides``)."""
    return _given(args, VIDEO_FLAGS)


def sampling_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling settings given as options (they win over the critic's)."""
    return _given(args, SAMPLING_FLAGS)


def _number(text: str) -> int | float:
    """``text`` as an int or a finite float (``ValueError`` when it is neither)."""
    import math

    text = text.strip()
    try:
        return int(text)
    except ValueError:
        value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read with ``yaml.safe_load`` (numbers, booleans, strings, lists — no object
    construction), except that a number YAML 1.1 reads as a string (``5e-4``, which has no dot) is a number; a value
    it refuses is a one-line error naming the parameter."""
    import yaml

    from recipe_lib.errors import ConfigError
    from recipe_lib.prompts import yaml_problem

    params: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"parameter '{pair}' is not key=value")
        key, value = pair.split("=", 1)
        try:
            params[key.strip()] = _number(value)
        except ValueError:
            pass
        else:
            continue
        try:
            params[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"parameter '{pair}': the value is not a plain YAML value ({yaml_problem(exc)})",
                hint="give numbers, true/false, strings or [lists]; tags such as !!python/... are refused",
            ) from exc
    return params


def config_from_args(cls: type[T], args: argparse.Namespace, renames: dict[str, str] | None = None, **given: Any) -> T:
    """Dataclass ``cls`` built from the parsed options, so a command never copies a config by hand: each field takes
    the option of the same name (``renames`` maps a field to an option named otherwise, e.g. ``out_dir`` -> ``out``);
    an option left unset (None) keeps the field's default; ``given`` values win over both."""
    import dataclasses

    renames = renames or {}
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in given:
            kwargs[f.name] = given[f.name]
            continue
        value = getattr(args, renames.get(f.name, f.name), None)
        if value is not None:
            kwargs[f.name] = value
    return cls(**kwargs)


def add_config_args(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    names: dict[str, str] | None = None,
    defaults: dict[str, Any] | None = None,
    types: dict[str, Any] | None = None,
    skip: tuple[str, ...] = (),
    only: tuple[str, ...] | None = None,
    notes: dict[str, str] | None = None,
) -> None:
    """One ``--option`` per field of dataclass ``cls`` (underscores become dashes), so the flags, their types, choices,
    defaults and help come from the config itself (``field(metadata={"help": ...})``) and are never written twice.

    ``names`` maps a field to another option name (``out_dir`` -> ``out``); ``defaults`` replaces a field's default
    (one known only at run time; None: the option is left unset unless given); ``types`` gives a parser for a field
    whose annotation argparse cannot read; ``only`` / ``skip`` choose the fields, in ``only``'s order; ``notes`` adds
    text to a field's help (e.g. "default: the profile's").
    :func:`config_from_args` with the same ``names`` builds the config back."""
    import dataclasses
    import types as pytypes
    import typing

    from recipe_lib.validation import literal_values

    names, defaults, types, notes = names or {}, defaults or {}, types or {}, notes or {}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in only if only is not None else list(fields):
        f = fields[name]
        if f.name in skip or not f.init:
            continue
        hint = hints[f.name]
        if typing.get_origin(hint) in (typing.Union, pytypes.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        default = defaults.get(f.name, f.default if f.default is not dataclasses.MISSING else None)
        kwargs: dict[str, Any] = {"default": default, "dest": names.get(f.name, f.name)}
        help_text = f.metadata.get("help", "")
        if f.name in types:
            kwargs["type"] = types[f.name]
        elif hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif (choices := literal_values(hint)) is not None:
            kwargs["choices"] = choices
        elif hint in (int, float, str, Path):
            kwargs["type"] = hint
        if default is not None and not isinstance(default, bool):
            help_text = f"{help_text} (default: {default})" if help_text else f"default: {default}"
        elif default is True:
            help_text = f"{help_text} (default: on)" if help_text else "default: on"
        if f.name in notes:
            help_text = f"{help_text} ({notes[f.name]})" if help_text else notes[f.name]
        kwargs["help"] = help_text or None
        parser.add_argument("--" + names.get(f.name, f.name).replace("_", "-"), **kwargs)
