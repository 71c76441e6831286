"""Prompt files (YAML with exactly ``system_prompt`` and ``user_prompt``) and chat messages built from them."""

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
from recipe_lib.errors import ConfigError

PROMPT_KEYS = ("system_prompt", "user_prompt")
ANSWER_PREFIX = "<answer>\n"


@dataclasses.dataclass(frozen=True)
class PromptSpec:
    name: str
    system_prompt: str
    user_prompt: str

    @property
    def thinking(self) -> bool:
        """Whether the rubric asks for reasoning in ``<think>`` before the answer."""
        return "<think>" in self.system_prompt

    def digest(self) -> str:
        """A short hash of the prompt text: part of every cached result's key."""
        return hashlib.sha256(f"{self.system_prompt}\x00{self.user_prompt}".encode()).hexdigest()[:16]


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
        if key not in PROMPT_KEYS:
            close = difflib.get_close_matches(str(key), PROMPT_KEYS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(PROMPT_KEYS)}"
            raise ConfigError(f"{path}: unknown key '{key}'", hint=hint)
    for key in PROMPT_KEYS:
        if key not in data:
            raise ConfigError(f"{path}: missing key '{key}'")
        if not isinstance(data[key], str) or not data[key].strip():
            raise ConfigError(f"{path}: '{key}' must be non-empty text")
    return PromptSpec(
        name=path.stem, system_prompt=data["system_prompt"].strip(), user_prompt=data["user_prompt"].strip()
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
