import pytest

from recipe_lib.inference.parsing import parse_answer


def test_plain_answer():
    r = parse_answer("<answer>\n4\n</answer>")
    assert r.score == 4 and r.error is None and r.well_formed and r.thinking is None


def test_thinking_then_answer():
    r = parse_answer("<think>\nthe ball falls\n</think>\n<answer>\n2\n</answer>", require_thinking=True)
    assert r.score == 2 and r.thinking == "the ball falls" and r.well_formed


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty output"),
        ("The video is plausible. Score: 4", "no <answer>"),
        ("<answer>\n4", "unclosed <answer>"),
        ("<answer>\nYes\n</answer>", "not a number"),
        ("<answer>7</answer>", "outside 1-5"),
        ("<answer>3.5</answer>", "not a whole number"),
    ],
)
def test_failures_say_why(text, reason):
    r = parse_answer(text)
    assert r.score is None
    assert reason in r.error


def test_text_around_answer_is_not_well_formed():
    r = parse_answer("Sure! <answer>3</answer> hope that helps")
    assert r.score == 3 and not r.well_formed


def test_real_cosmos_reason1_outputs(model_outputs):
    """The real critic's outputs: pizza ones carry scores in their file names; video-critic ones answer Yes/No."""
    for name, text in model_outputs.items():
        r = parse_answer(text)
        if "_pred" in name:
            expected = int(name.split("_pred")[1].split("_")[0])
            assert r.score == expected, name
            assert r.thinking and len(r.thinking) > 100
            assert r.well_formed
        else:
            assert r.score is None
            assert "not a number" in r.error and ("Yes" in r.error or "No" in r.error), (name, r.error)
