"""GRPO rewards: the recipe's dense reward, the cookbook's linear one, the format reward, on real and built replies."""

from __future__ import annotations

import re

import pytest

from recipe_lib.errors import ConfigError, DataError
from recipe_lib.train.rewards import (
    REWARDS,
    SCORE_REWARDS,
    combined_reward,
    dense_score,
    format_reward,
    linear_score,
    reference_score,
    reward_range,
    score_reward,
)

# Written out by hand from the recipe text (rows: prediction 1-5, columns: label 1-5).
DENSE_TABLE = [
    [1.0, 0.5, 0.0, 0.0, 0.0],
    [0.5, 1.0, 0.5, 0.0, 0.0],
    [0.0, 0.5, 1.0, 0.5, 0.0],
    [0.0, 0.0, 0.5, 1.0, 0.5],
    [0.0, 0.0, 0.0, 0.5, 1.0],
]
# max(0, 1 - |d| / 4) by hand.
LINEAR_TABLE = [
    [1.0, 0.75, 0.5, 0.25, 0.0],
    [0.75, 1.0, 0.75, 0.5, 0.25],
    [0.5, 0.75, 1.0, 0.75, 0.5],
    [0.25, 0.5, 0.75, 1.0, 0.75],
    [0.0, 0.25, 0.5, 0.75, 1.0],
]


def reply(score: int | str, thinking: str | None = "The ball falls and bounces as expected.") -> str:
    body = f"<answer>\n{score}\n</answer>"
    return f"<think>\n{thinking}\n</think>\n\n{body}" if thinking is not None else body


@pytest.mark.parametrize("pred", range(1, 6))
@pytest.mark.parametrize("ref", range(1, 6))
def test_score_tables(pred: int, ref: int) -> None:
    assert dense_score(pred, ref) == DENSE_TABLE[pred - 1][ref - 1]
    assert linear_score(pred, ref) == pytest.approx(LINEAR_TABLE[pred - 1][ref - 1])
    assert score_reward("dense", reply(pred), ref) == DENSE_TABLE[pred - 1][ref - 1]
    assert score_reward("linear", reply(pred), ref) == pytest.approx(LINEAR_TABLE[pred - 1][ref - 1])


def test_registry_names_and_calls() -> None:
    assert set(SCORE_REWARDS) == {"dense", "linear"}
    assert set(REWARDS) == {"dense", "linear", "format"}
    text = reply(3)
    assert REWARDS["dense"](text, 4) == 0.5
    assert REWARDS["linear"](text, 5) == 0.5
    assert REWARDS["format"](text, 4) == 1.0


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("   \n", "blank"),
        ("The video looks fine, I would say 4.", "no answer block"),
        ("<think>hmm</think><answer>Yes</answer>", "a word"),
        ("<think>hmm</think><answer>6</answer>", "above the scale"),
        ("<think>hmm</think><answer>0</answer>", "below the scale"),
        ("<think>hmm</think><answer>3.5</answer>", "not whole"),
        ("<think>long reasoning that was cut off</think><answer>\n4", "unclosed"),
    ],
)
def test_unparsable_replies_earn_nothing(text: str, why: str) -> None:
    for name in SCORE_REWARDS:
        assert score_reward(name, text, 4) == 0.0, why
    assert format_reward(text) == 0.0, why
    assert combined_reward(text, 4, format_weight=1.0) == 0.0, why


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (reply(4), 1.0),
        ("<think>short</think><answer>2</answer>", 1.0),
        ("  <THINK>\nupper-case tags\n</THINK>\n<ANSWER> 5 </ANSWER>\n", 1.0),
        (reply(4, thinking=None), 0.0),  # no reasoning
        (reply(4) + "\nSo the score is 4.", 0.0),  # text after the answer
        ("Let me look.\n" + reply(4), 0.0),  # text before the reasoning
        (reply(4) + "\n<answer>3</answer>", 0.0),  # two answers
        ("<answer>4</answer><think>after</think>", 0.0),  # wrong order
    ],
)
def test_format_reward(text: str, expected: float) -> None:
    assert format_reward(text) == expected


def test_score_reward_ignores_format_but_uses_last_answer() -> None:
    # A reply without reasoning still carries a score: the score reward pays it, the format reward does not.
    assert score_reward("dense", reply(4, thinking=None), 4) == 1.0
    assert score_reward("dense", reply(2) + "\n<answer>4</answer>", 4) == 1.0


def test_combined_reward_default_is_the_cookbook_script_reward() -> None:
    # The cookbook's custom_grpo.py: dense score reward + 1.0 x format reward.
    text = reply(3)
    assert combined_reward(text, 4) == 1.5
    assert combined_reward(reply(3, thinking=None), 4) == 0.5, "no think block: no format reward"
    assert combined_reward(text, 4, format_weight=0.0) == 0.5, "the recipe text's reward alone"
    assert combined_reward(text, 4, score="linear") == 1.75
    assert combined_reward(text, 4, score="dense", format_weight=0.5) == 1.0
    assert combined_reward(reply(3, thinking=None), 4, format_weight=0.5) == 0.5
    assert reward_range() == (0.0, 2.0)
    assert reward_range(format_weight=0.0) == (0.0, 1.0)
    assert reward_range("linear", 1.0) == (0.0, 2.0)


def test_reference_forms() -> None:
    assert reference_score(3) == 3
    assert reference_score(3.0) == 3
    assert reference_score(" 5 ") == 5
    assert reference_score("<answer>\n2\n</answer>") == 2
    for bad in (0, 6, 2.5, "four", "<answer>Yes</answer>", None, True, [3]):
        with pytest.raises(DataError):
            reference_score(bad)


def test_bad_choices_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown score reward 'exact'"):
        score_reward("exact", reply(3), 3)
    with pytest.raises(ConfigError, match="format_weight"):
        combined_reward(reply(3), 3, format_weight=-1.0)
    with pytest.raises(DataError):
        score_reward("dense", reply(3), "not a label")


def test_real_pizza_outputs(model_outputs: dict[str, str]) -> None:
    """The recipe's recorded Cosmos-Reason1 replies (file names carry the prediction and the label)."""
    pizza = {name: text for name, text in model_outputs.items() if "pizza" in name}
    assert len(pizza) == 2
    for name, text in pizza.items():
        pred, ref = map(int, re.search(r"pred(\d)_gt(\d)", name).groups())
        assert format_reward(text) == 1.0, name
        assert score_reward("dense", text, ref) == DENSE_TABLE[pred - 1][ref - 1], name
        assert score_reward("linear", text, ref) == pytest.approx(LINEAR_TABLE[pred - 1][ref - 1]), name
    after = pizza["cosmos_reason1_pizza_after_rl_pred2_gt2.txt"]
    before = pizza["cosmos_reason1_pizza_before_rl_pred5_gt2.txt"]
    # RL moved the answer from 5 to the label 2: full reward instead of none (dense) or a quarter (linear).
    assert combined_reward(before, 2, format_weight=0.0) == 0.0
    assert combined_reward(after, 2, format_weight=0.0) == 1.0
    assert combined_reward(before, 2) == 1.0 and combined_reward(after, 2) == 2.0, "both are well formed"
    assert combined_reward(before, 2, score="linear", format_weight=1.0) == pytest.approx(1.25)
    assert combined_reward(after, 2, score="linear", format_weight=1.0) == pytest.approx(2.0)


def test_real_video_critic_outputs_are_not_scores(model_outputs: dict[str, str]) -> None:
    """The video-critic example answers Yes/No: well-shaped tags, but no 1-5 score, so every reward is 0."""
    critic = {name: text for name, text in model_outputs.items() if "video_critic" in name}
    assert len(critic) == 4
    for name, text in critic.items():
        assert re.search(r"<answer>\s*(Yes|No)\s*</answer>", text), name
        for ref in range(1, 6):
            assert combined_reward(text, ref, score="linear", format_weight=1.0) == 0.0, name
