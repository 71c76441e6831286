"""One option-validation layer, run by the CLI on the parsed options of every command before any work starts.

Each rule names an option (by its ``argparse`` destination) and the values it accepts; an option a command does not
have is not checked. A value outside the rule is a :class:`~recipe_lib.errors.ConfigError` naming the option and what
it accepts, so ``--limit -3``, ``--fps nan`` or ``--threshold nan`` fail at once with one line instead of meaning
something else, or failing with a traceback after every clip was scored.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import typing
from typing import Any

from recipe_lib.errors import ConfigError

PATCH_PIXELS = 28 * 28  # one merged vision patch: the smallest frame the critic can see


@dataclasses.dataclass(frozen=True)
class Rule:
    """``dest`` must be a finite number at least ``low`` (or above it, when ``strict``) and at most ``high``."""

    dest: str
    low: float | None = None
    high: float | None = None
    strict: bool = False
    what: str = ""

    @property
    def option(self) -> str:
        return "--" + self.dest.replace("_", "-")

    def accepts(self) -> str:
        if self.what:
            return self.what
        parts = []
        if self.low is not None:
            parts.append(f"{'above' if self.strict else 'at least'} {self.low:g}")
        if self.high is not None:
            parts.append(f"at most {self.high:g}")
        return "a number " + " and ".join(parts) if parts else "a finite number"

    def check(self, value: Any, name: str | None = None) -> None:
        """Raise :class:`ConfigError` when ``value`` breaks the rule; ``name`` is what the message calls it (default:
        the option, ``--batch-size``; a config passes its field name)."""
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            return
        bad = not math.isfinite(value)
        if not bad and self.low is not None:
            bad = value <= self.low if self.strict else value < self.low
        if not bad and self.high is not None:
            bad = value > self.high
        if bad:
            raise ConfigError(f"{name or self.option} {value:g} is not allowed: it must be {self.accepts()}")


RULES: tuple[Rule, ...] = (
    Rule("limit", 1, what="a whole number of clips, at least 1 (leave it out to score every clip)"),
    Rule("batch_size", 1),
    Rule("max_batch_tokens", 1),
    Rule("fps", 0, 120, strict=True, what="a number of frames per second above 0 and at most 120"),
    Rule("max_frames", 1),
    Rule("max_pixels", PATCH_PIXELS, what=f"at least {PATCH_PIXELS} (one 28x28 vision patch)"),
    Rule("total_pixels", PATCH_PIXELS, what=f"at least {PATCH_PIXELS} (one 28x28 vision patch)"),
    Rule("max_new_tokens", 1),
    Rule("trials", 1),
    Rule("temperature", 0),
    Rule("top_p", 0, 1, strict=True),
    Rule("top_k", 0),
    Rule("repetition_penalty", 0, strict=True),
    Rule("seed", 0, 2**32 - 1, what="a whole number from 0 to 4294967295"),
    Rule(
        "threshold",
        1,
        5,
        strict=True,
        what="a number above 1 and at most 5 (the score scale is 1-5: at 1 or below every clip is kept, above 5 none)",
    ),
    Rule("resamples", 0),
    Rule("n", 1),
    Rule("gpu_memory_utilization", 0, 1, strict=True),
    Rule("max_model_len", 1),
    Rule("tensor_parallel_size", 1),
    Rule("max_num_seqs", 1),
    Rule("max_num_batched_tokens", 1),
    Rule("concurrency", 1),
    Rule("timeout", 0, strict=True),
    Rule("download_deadline", 0, strict=True, what="a number of seconds above 0"),
    Rule("retries", 0),
    Rule("num_workers", 1),
    Rule("gpus_per_worker", 0),
)

RULES_BY_NAME = {rule.dest: rule for rule in RULES}


def check_fields(config: Any) -> None:
    """Check the fields of dataclass ``config`` that share a name with a rule (``batch_size``, ``limit``, ``timeout``,
    ...): a config built in a notebook gets the same checks as the options of the command that builds it."""
    choices = literal_choices(type(config))
    for f in dataclasses.fields(config):
        rule = RULES_BY_NAME.get(f.name)
        if rule is not None:
            rule.check(getattr(config, f.name), name=f.name)
        allowed = choices.get(f.name)
        if allowed is not None and getattr(config, f.name) not in allowed:
            raise ConfigError(
                f"{f.name} {getattr(config, f.name)} is not allowed",
                hint=f"use one of {', '.join(map(str, allowed))}",
            )


def literal_values(hint: Any) -> tuple[Any, ...] | None:
    """The values annotation ``hint`` allows when it is a ``Literal[...]``; None for any other annotation."""
    return typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None


@functools.cache
def literal_choices(cls: type) -> dict[str, tuple[Any, ...]]:
    """The allowed values of each field of dataclass ``cls`` typed ``Literal[...]`` (what its option's choices are)."""
    try:
        hints = typing.get_type_hints(cls)
    except NameError:  # an annotation names a type imported only for type checkers: no choices read from it
        return {}
    values = {f.name: literal_values(hints.get(f.name)) for f in dataclasses.fields(cls)}
    return {name: allowed for name, allowed in values.items() if allowed is not None}


DTYPE_NAMES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16", "half")


def validate_args(args: argparse.Namespace) -> None:
    """Check every option the command has against :data:`RULES` (see the module docstring)."""
    values = vars(args)
    for rule in RULES:
        if rule.dest in values:
            rule.check(values[rule.dest])
    dtype = values.get("dtype")
    if isinstance(dtype, str) and dtype.strip().lower() not in DTYPE_NAMES:
        raise ConfigError(f"--dtype {dtype} is not allowed", hint="use auto, float32, bfloat16 or float16")
    label = values.get("label_column")
    if isinstance(label, str) and not label.strip():
        raise ConfigError("--label-column is empty", hint="name the label column of the table (default: pc)")
    for dest, default in (("caption_column", "caption"), ("sa_column", "sa")):
        value = values.get(dest)
        if isinstance(value, str) and not value.strip():
            option = "--" + dest.replace("_", "-")
            raise ConfigError(f"{option} is empty", hint=f"name the column of the table (default: {default})")
    task = values.get("task")
    if isinstance(task, str):
        from recipe_lib.tasks import check_keep_on, parse_tasks

        tasks = parse_tasks(task)
        if "keep_on" in values:
            check_keep_on(values["keep_on"], tasks)
