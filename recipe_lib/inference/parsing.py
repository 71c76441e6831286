"""Parse a critic's answer: ``<think>…</think>`` (optional) then ``<answer>N</answer>`` with N in 1-5.

Every failure says why, so a report can count unparsed outputs by reason instead of silently dropping them.
"""

from __future__ import annotations

import dataclasses
import re

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


def parse_answer(text: str, lo: int = 1, hi: int = 5, require_thinking: bool = False) -> ParsedAnswer:
    """Extract the score. ``error`` names the reason when there is none.

    ``well_formed`` is True when the output is exactly an optional think block followed by one answer block (with the
    think block required when ``require_thinking``), and nothing but white space around them.
    """
    if text is None or not text.strip():
        return ParsedAnswer(None, None, None, "empty output", False)
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
    value = float(answer_text)
    if value != int(value):
        return ParsedAnswer(None, thinking, answer_text, f"answer is not a whole number: {answer_text}", False)
    score = int(value)
    if not lo <= score <= hi:
        return ParsedAnswer(None, thinking, answer_text, f"answer {score} is outside {lo}-{hi}", False)
    pattern = r"\s*(<think>.*?</think>\s*)?<answer>\s*\d+\s*</answer>\s*"
    well_formed = len(answers) == 1 and re.fullmatch(pattern, text, re.DOTALL | re.IGNORECASE) is not None
    if require_thinking and thinking is None:
        well_formed = False
    return ParsedAnswer(score, thinking, answer_text, None, well_formed)
