"""Parse a critic's answer in the format its prompt file names (the prompt's ``answer_format`` key).

``tagged``  ``<think>…</think>`` (optional) then ``<answer>N</answer>`` with N in 1-5 — Cosmos-Reason1's prompts.
``line``    the score alone on a line (``3``, or ``3.``), after an optional ``<think>…</think>`` block; the first such
            line counts — Cosmos-Reason2's prompt, which follows Qwen3-VL's guidance of answering without tags (the
            cookbook's own parser reads the first line that holds only a digit 1-5, the same rule).

Every failure says why, so a report can count unparsed outputs by reason instead of silently dropping them.
"""

from __future__ import annotations

import dataclasses
import decimal
import re

from recipe_lib.constants import ANSWER_FORMATS

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL | re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class ParsedAnswer:
    score: int | None
    thinking: str | None
    answer_text: str | None
    error: str | None
    well_formed: bool

    @property
    def ok(self) -> bool:
        return self.score is not None


_NUMBER_LINE = re.compile(r"[+-]?\d+(\.\d+)?\.?")


def parse_answer(
    text: str, lo: int = 1, hi: int = 5, require_thinking: bool = False, answer_format: str = "tagged"
) -> ParsedAnswer:
    """Extract the score. ``error`` names the reason when there is none.

    ``well_formed`` is True when the output is exactly an optional think block followed by the answer (one answer
    block for ``tagged``, one line holding the score for ``line``; the think block required when
    ``require_thinking``), and nothing but white space around them.
    """
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"unknown answer format {answer_format!r} (known: {', '.join(ANSWER_FORMATS)})")
    if text is None or not text.strip():
        return ParsedAnswer(None, None, None, "empty output", False)
    if answer_format == "line":
        return _parse_line(text, lo, hi, require_thinking)
    think_match = _THINK_RE.search(text)
    thinking = think_match.group(1).strip() if think_match else None
    answers = _ANSWER_RE.findall(text)
    if not answers:
        if "<answer>" in text.lower():
            return ParsedAnswer(None, thinking, None, "unclosed <answer> tag (output cut off?)", False)
        return ParsedAnswer(None, thinking, None, "no <answer>…</answer> block", False)
    answer_text = answers[-1].strip()
    if not re.fullmatch(r"[+-]?\d+(\.\d+)?", answer_text):
        shown = answer_text if len(answer_text) <= 40 else answer_text[:37] + "..."
        return ParsedAnswer(None, thinking, answer_text, f"answer is not a number {lo}-{hi}: {shown!r}", False)
    score, error = _number_error(answer_text, lo, hi)
    if error is not None:
        return ParsedAnswer(None, thinking, answer_text, error, False)
    pattern = r"\s*(<think>.*?</think>\s*)?<answer>\s*\d+\s*</answer>\s*"
    well_formed = len(answers) == 1 and re.fullmatch(pattern, text, re.DOTALL | re.IGNORECASE) is not None
    if require_thinking and thinking is None:
        well_formed = False
    return ParsedAnswer(score, thinking, answer_text, None, well_formed)


def _number_error(answer_text: str, lo: int, hi: int) -> tuple[int | None, str | None]:
    """The score a number's text stands for, or why it is none. The text is read as an exact decimal and compared
    with the scale before any conversion, so a runaway answer (5 000 nines) is an answer outside the scale, never an
    overflow."""
    value = decimal.Decimal(answer_text)
    shown = _shown(answer_text)
    if value != value.to_integral_value():
        return None, f"answer is not a whole number: {shown}"
    if not lo <= value <= hi:
        return None, f"answer {shown} is outside {lo}-{hi}"
    return int(value), None


def _shown(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}... ({len(text)} characters)"


def _parse_line(text: str, lo: int, hi: int, require_thinking: bool) -> ParsedAnswer:
    """The ``line`` format: the first line (after any think block) that holds only a number."""
    think_match = _THINK_RE.search(text)
    thinking = think_match.group(1).strip() if think_match else None
    if think_match:
        rest = text[think_match.end() :]
    elif "<think>" in text.lower():
        return ParsedAnswer(None, None, None, "unclosed <think> block (output cut off?)", False)
    else:
        rest = text
    lines = [line.strip() for line in rest.splitlines() if line.strip()]
    numbers = [line for line in lines if _NUMBER_LINE.fullmatch(line)]
    if not numbers:
        shown = lines[0] if lines else ""
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        return ParsedAnswer(
            None, thinking, None, f"no line holding only a score {lo}-{hi} (first line: {shown!r})", False
        )
    answer_text = numbers[0].rstrip(".")
    score, error = _number_error(answer_text, lo, hi)
    if error is not None:
        return ParsedAnswer(None, thinking, answer_text, error, False)
    well_formed = len(lines) == 1 and not (think_match and text[: think_match.start()].strip())
    if require_thinking and thinking is None:
        well_formed = False
    return ParsedAnswer(score, thinking, answer_text, None, well_formed)
