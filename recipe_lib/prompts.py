"""Prompt files and chat messages built from them.

A prompt file is YAML with ``system_prompt`` and ``user_prompt`` (required) and two keys that say how the critic
answers, so that no scoring code assumes one answer layout:

``answer_prefix``  what the critic writes right before its score digit. ``expected`` mode appends it after the
                   assistant turn opens and reads the next-token probabilities of 1-5 (``"<answer>\\n"`` for the
                   Cosmos-Reason1 prompts; ``""`` for Cosmos-Reason2's, which answers with the digit first).
``answer_format``  how a generated answer is parsed and how an SFT target is written: ``tagged``
                   (``<answer>\\nN\\n</answer>``) or ``line`` (the digit alone on a line)
                   (:mod:`recipe_lib.inference.parsing`).

Both are optional in the file; a mode that needs a missing one stops with an error naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from recipe_lib.config import PROMPTS_DIR, VideoSettings
from recipe_lib.constants import ANSWER_FORMATS
from recipe_lib.errors import ConfigError

PROMPT_KEYS = ("system_prompt", "user_prompt")
ANSWER_KEYS = ("answer_prefix", "answer_format")
ANSWER_PREFIX = "<answer>\n"  # the answer prefix of the tagged prompts (their files say so explicitly)
# What the tagged prompts' digest was computed from before the answer keys existed: kept, so cached rows stay valid.
_LEGACY_ANSWER = (ANSWER_PREFIX, "tagged")


@dataclasses.dataclass(frozen=True)
class PromptSpec:
    name: str
    system_prompt: str
    user_prompt: str
    answer_prefix: str | None = None
    answer_format: str | None = None

    @property
    def thinking(self) -> bool:
        """Whether the rubric asks for reasoning in ``<think>`` before the answer."""
        return "<think>" in self.system_prompt

    def digest(self) -> str:
        """A short hash of the prompt text and its answer keys: part of every cached result's key (a prompt with the
        tagged prompts' answer keys, or none, hashes its text alone, as before those keys existed)."""
        text = f"{self.system_prompt}\x00{self.user_prompt}"
        answer = (self.answer_prefix, self.answer_format)
        if answer not in (_LEGACY_ANSWER, (None, None)):
            text += f"\x00{self.answer_prefix!r}\x00{self.answer_format!r}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def expected_prefix(self) -> str:
        """The ``answer_prefix`` (``expected`` mode needs it)."""
        if self.answer_prefix is None:
            raise ConfigError(
                f"prompt {self.name} has no answer_prefix: expected mode needs it",
                hint="add the text the critic writes before its score to the prompt file, e.g. "
                '\'answer_prefix: "<answer>\\n"\' (or "" when it answers with the digit first)',
            )
        return self.answer_prefix

    def parse_format(self, needed_by: str = "generate mode") -> str:
        """The ``answer_format`` (generate mode and SFT targets need it)."""
        if self.answer_format is None:
            raise ConfigError(
                f"prompt {self.name} has no answer_format: {needed_by} needs it",
                hint=f"add 'answer_format: tagged' or 'answer_format: line' to the prompt file "
                f"(known: {', '.join(ANSWER_FORMATS)})",
            )
        return self.answer_format

    def require(self, mode: str) -> None:
        """Raise the error of a key ``mode`` needs and the file lacks (before any model is loaded)."""
        if mode == "expected":
            self.expected_prefix()
        elif mode == "generate":
            self.parse_format()

    def answer_text(self, score: int, thinking: str | None = None) -> str:
        """The assistant text of an SFT target for ``score``, in this prompt's ``answer_format``."""
        if self.parse_format("an SFT target") == "line":
            body = str(int(score))
            return f"<think>\n{thinking.strip()}\n</think>\n{body}" if thinking is not None else body
        return format_answer(score, thinking)


def resolve_prompt_path(prompt: str | Path) -> Path:
    """A path, or the name of a file in ``prompts/`` (with or without ``.yaml``)."""
    path = Path(prompt)
    if path.is_file():
        return path
    for candidate in (PROMPTS_DIR / str(prompt), PROMPTS_DIR / f"{prompt}.yaml"):
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in PROMPTS_DIR.glob("*.yaml"))
    raise ConfigError(f"prompt file not found: {prompt}", hint=f"give a path or one of: {', '.join(known)}")


YAML_HINT = "a prompt file is plain YAML text: 'system_prompt: |' and 'user_prompt: |' blocks, no !!tags"
ALLOWED_KEYS = PROMPT_KEYS + ANSWER_KEYS


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line saying what is wrong and where (PyYAML's own text spans several lines)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def load_prompt(prompt: str | Path = "video_reward") -> PromptSpec:
    """Load and validate a prompt YAML (``yaml.safe_load``: no object construction)."""
    path = resolve_prompt_path(prompt)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({yaml_problem(exc)})", hint=YAML_HINT) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a prompt file must be a mapping with keys {', '.join(PROMPT_KEYS)}",
            hint=f"got {type(data).__name__}; write 'system_prompt: |' and 'user_prompt: |' blocks",
        )
    for key in data:
        if key not in ALLOWED_KEYS:
            close = difflib.get_close_matches(str(key), ALLOWED_KEYS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(ALLOWED_KEYS)}"
            raise ConfigError(f"{path}: unknown key '{key}'", hint=hint)
    for key in PROMPT_KEYS:
        if key not in data:
            raise ConfigError(f"{path}: missing key '{key}'")
        if not isinstance(data[key], str) or not data[key].strip():
            raise ConfigError(f"{path}: '{key}' must be non-empty text")
    prefix = data.get("answer_prefix")
    if prefix is not None and not isinstance(prefix, str):
        raise ConfigError(
            f"{path}: 'answer_prefix' must be text, got {type(prefix).__name__}",
            hint='quote it: answer_prefix: "<answer>\\n" (or "" when the critic answers with the digit first)',
        )
    answer_format = data.get("answer_format")
    if answer_format is not None and answer_format not in ANSWER_FORMATS:
        close = difflib.get_close_matches(str(answer_format), ANSWER_FORMATS, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"use one of: {', '.join(ANSWER_FORMATS)}"
        raise ConfigError(f"{path}: unknown answer_format '{answer_format}'", hint=hint)
    return PromptSpec(
        name=path.stem,
        system_prompt=data["system_prompt"].strip(),
        user_prompt=data["user_prompt"].strip(),
        answer_prefix=prefix,
        answer_format=answer_format,
    )


def video_part(video: str | Path, video_settings: VideoSettings) -> dict[str, Any]:
    """The video entry of a user message, carrying the sampling keys Qwen2.5-VL reads."""
    part: dict[str, Any] = {"type": "video", "video": str(video), "fps": video_settings.fps}
    for key in ("total_pixels", "max_pixels", "min_pixels"):
        value = getattr(video_settings, key)
        if value is not None:
            part[key] = value
    return part


# Chat-control tokens of Qwen-family tokenizers look like <|im_end|>, <|video_pad|>, <|vision_start|> ...
_CONTROL_TOKEN = re.compile(r"<\|([^<>|]{0,64})\|>")
_WORD_JOINER = "\u2060"  # invisible; splits a control token's text so the tokenizer reads plain characters


def neutralise_special_tokens(text: str, special: Iterable[str] = ()) -> str:
    """Data (a caption) never becomes chat structure: every ``<|...|>`` token and every tokenizer special token in
    ``special`` found in ``text`` gets an invisible word joiner after its first character, so it is tokenised as
    ordinary characters (a caption holding ``<|video_pad|>`` or ``<|im_end|>`` forges nothing). Text without such
    tokens is returned unchanged."""
    text = _CONTROL_TOKEN.sub(lambda m: f"<{_WORD_JOINER}|{m.group(1)}|>", text)
    for token in sorted({t for t in special if len(t) > 1}, key=len, reverse=True):
        if token in text:
            text = text.replace(token, token[0] + _WORD_JOINER + token[1:])
    return text


def build_messages(
    prompt: PromptSpec,
    video: str | Path,
    video_settings: VideoSettings,
    caption: str | None = None,
    answer: str | None = None,
    special_tokens: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Chat messages [system, user(video + text), (assistant)] for one clip.

    ``caption`` (the generation prompt of the clip, when known) is added to the user text as context, with control
    tokens neutralised (:func:`neutralise_special_tokens`; ``special_tokens``: the tokenizer's own).
    """
    text = prompt.user_prompt
    if caption:
        caption = neutralise_special_tokens(str(caption), special_tokens)
        text = f"{text}\nThe video was generated from this description: {caption}"
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": [{"type": "text", "text": prompt.system_prompt}]},
        {"role": "user", "content": [video_part(video, video_settings), {"type": "text", "text": text}]},
    ]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def format_answer(score: int, thinking: str | None = None) -> str:
    """The assistant text for a score: ``<answer>\\nN\\n</answer>`` (with a ``<think>`` block if given)."""
    body = f"<answer>\n{int(score)}\n</answer>"
    return f"<think>\n{thinking.strip()}\n</think>\n{body}" if thinking is not None else body
