"""GRPO rewards for a 1-5 plausibility critic, shared by the in-process trainer and the cosmos-rl entry script.

Score rewards compare the parsed score ``p`` with the human label ``g`` (both whole numbers 1-5):

``dense``   1 if p == g, 0.5 if |p - g| == 1, else 0 — the reward the recipe's text describes, and what the
            cookbook's GRPO script (``custom_grpo.py``) computes.
``linear``  max(0, 1 - |p - g| / 4) (0.75 for off by one, 0.5 for two...) — what that script computed in its first
            version only; the commit "fixed using wrong version of reward function" replaced it with ``dense``.

The ``format`` reward is 1 for a well-formed reply — exactly ``<think>…</think>`` then ``<answer>N</answer>`` with N in
1-5 and nothing but white space around them — and 0 otherwise. The cookbook's script adds cosmos-rl's
``format_reward_fn`` (1 for ``<think>…</think>\n\n<answer>…</answer>``) to the score reward at weight 1; ours differs
only in also asking for a whole score 1-5 in the answer and allowing any white space between the blocks.

Text that yields no score (no answer block, a word instead of a number, a number outside 1-5, a cut-off reply) earns
0 from every score reward: the policy is never paid for an answer it did not give.

Default (:data:`DEFAULT_SCORE`, :data:`DEFAULT_FORMAT_WEIGHT`): ``dense`` plus 1.0 x ``format`` — the cookbook's script
as it stands, i.e. the reward behind the recipe's published GRPO numbers. The total lies in [0, 2]. Dense pays nothing
beyond one step away, which concentrates the signal on exact and near answers (the accuracy the recipe reports);
``linear`` still ranks answers two or three steps away and can help a policy whose answers start far from the labels.
The format term matters while the policy still writes malformed replies; for a policy that always writes them well
it is a constant, which group-normalised advantages ignore. ``format_weight = 0`` gives the text's reward alone, in
[0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable

from recipe_lib.errors import ConfigError, DataError
from recipe_lib.inference.parsing import parse_answer

LO, HI = 1, 5
DEFAULT_SCORE = "dense"
DEFAULT_FORMAT_WEIGHT = 1.0


def dense_score(pred: int, ref: int) -> float:
    """1 exact, 0.5 off by one, 0 otherwise."""
    gap = abs(int(pred) - int(ref))
    return 1.0 if gap == 0 else 0.5 if gap == 1 else 0.0


def linear_score(pred: int, ref: int) -> float:
    """max(0, 1 - |pred - ref| / 4): a linear fall-off over the 1-5 scale."""
    return max(0.0, 1.0 - abs(int(pred) - int(ref)) / (HI - LO))


SCORE_REWARDS: dict[str, Callable[[int, int], float]] = {"dense": dense_score, "linear": linear_score}


def reference_score(reference: object) -> int:
    """The label as an int 1-5, from an int, a digit string, or an ``<answer>N</answer>`` text."""
    if isinstance(reference, bool):
        raise DataError(f"reference {reference!r} is not a score 1-5")
    if isinstance(reference, int | float):
        value = reference
    elif isinstance(reference, str):
        text = reference.strip()
        if "<answer>" in text.lower():
            parsed = parse_answer(text, LO, HI)
            if parsed.score is None:
                raise DataError(f"reference {reference!r}: {parsed.error}")
            return parsed.score
        try:
            value = float(text)
        except ValueError as exc:
            raise DataError(f"reference {reference!r} is not a score 1-5") from exc
    else:
        raise DataError(f"reference {reference!r} ({type(reference).__name__}) is not a score 1-5")
    if not math.isfinite(value) or value != int(value) or not LO <= int(value) <= HI:
        raise DataError(f"reference {reference!r} is not a whole number {LO}-{HI}")
    return int(value)


def format_reward(completion_text: str, reference: object = None) -> float:
    """1.0 for exactly ``<think>…</think>`` then ``<answer>N</answer>`` with N in 1-5, else 0.0."""
    parsed = parse_answer(completion_text, LO, HI, require_thinking=True)
    return 1.0 if parsed.ok and parsed.well_formed else 0.0


def _text_reward(name: str) -> Callable[[str, object], float]:
    def reward(completion_text: str, reference: object) -> float:
        return score_reward(name, completion_text, reference)

    reward.__name__ = f"{name}_reward"
    reward.__doc__ = f"The '{name}' score reward of a completion against its label (0 when no score parses)."
    return reward


REWARDS: dict[str, Callable[[str, object], float]] = {
    "dense": _text_reward("dense"),
    "linear": _text_reward("linear"),
    "format": format_reward,
}


def score_reward(name: str, completion_text: str, reference: object) -> float:
    """Score reward ``name`` (``dense`` or ``linear``) of a completion; 0.0 when no score can be parsed from it."""
    if name not in SCORE_REWARDS:
        raise ConfigError(f"unknown score reward '{name}'", hint=f"use one of: {', '.join(SCORE_REWARDS)}")
    ref = reference_score(reference)
    parsed = parse_answer(completion_text, LO, HI)
    if parsed.score is None:
        return 0.0
    return SCORE_REWARDS[name](parsed.score, ref)


def combined_reward(
    completion_text: str, reference: object, score: str = DEFAULT_SCORE, format_weight: float = DEFAULT_FORMAT_WEIGHT
) -> float:
    """``score`` reward plus ``format_weight`` x format reward (see the module docstring for the default)."""
    if format_weight < 0:
        raise ConfigError(f"format_weight must be >= 0, got {format_weight}")
    total = score_reward(score, completion_text, reference)
    if format_weight:
        total += format_weight * format_reward(completion_text)
    return total


def reward_range(score: str = DEFAULT_SCORE, format_weight: float = DEFAULT_FORMAT_WEIGHT) -> tuple[float, float]:
    """The lowest and highest value :func:`combined_reward` can return for these settings."""
    if score not in SCORE_REWARDS:
        raise ConfigError(f"unknown score reward '{score}'", hint=f"use one of: {', '.join(SCORE_REWARDS)}")
    return 0.0, 1.0 + format_weight
