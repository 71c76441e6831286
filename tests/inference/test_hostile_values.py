"""Values a careless or hostile source hands the scoring code: runaway answers, log-probabilities that are no
probabilities, URLs and texts that carry credentials. The end-to-end cases are in
``tests/reliability/test_gauntlet_round3.py``; these pin the functions every path goes through."""

from __future__ import annotations

import math

import pytest

from recipe_lib.inference.parsing import parse_answer
from recipe_lib.inference.requests import InvalidLogprobs, row_from_logprobs
from recipe_lib.io import real_url, redact, redact_url, register_secret, remember_url
from recipe_lib.train.rewards import dense_score, reference_score


@pytest.mark.parametrize("fmt", ["tagged", "line"])
@pytest.mark.parametrize("number", ["9" * 5000, "-" + "9" * 400, "1" + "0" * 400 + ".5", "4." + "0" * 5000])
def test_runaway_numbers_are_parse_errors_never_overflows(fmt, number):
    text = f"<answer>{number}</answer>" if fmt == "tagged" else number
    parsed = parse_answer(text, answer_format=fmt)
    if number.startswith("4."):
        assert parsed.score == 4  # an exact 4.000... is a 4
    else:
        assert parsed.score is None and parsed.error
        assert len(parsed.error) < 200, "the reason quotes the number cut short"


def test_a_runaway_reference_is_a_data_error():
    from recipe_lib.errors import DataError

    for bad in ("inf", "nan", "1e400"):
        with pytest.raises(DataError):
            reference_score(bad)
    assert dense_score(4, reference_score("<answer>4</answer>")) == 1.0


@pytest.mark.parametrize("bad", [1000.0, math.inf, math.nan, 0.01, "x", None, True])
def test_log_probabilities_that_are_no_probabilities_are_refused(bad):
    with pytest.raises(InvalidLogprobs):
        row_from_logprobs({1: -1.0, 4: bad}, [1, 2, 3, 4, 5])


def test_minus_infinity_and_a_rounding_hair_above_zero_are_probabilities():
    row = row_from_logprobs({1: -math.inf, 4: 1e-7}, [1, 2, 3, 4, 5])
    assert row["score"] == 4 and math.isclose(sum(row["probs"]), 1.0)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://alice:pw-1234@h:8/a.mp4", "http://***@h:8/a.mp4"),
        ("https://h/a.mp4?X-Amz-Signature=abcd1234&X-Amz-Date=1", "https://h/a.mp4?X-Amz-Signature=***&X-Amz-Date=1"),
        ("https://h/a.mp4?sv=1&sig=zzzz9999", "https://h/a.mp4?sv=1&sig=***"),
        ("https://h/a.mp4?api_key=k123456&frame=2#t", "https://h/a.mp4?api_key=***&frame=2#t"),
        ("https://h/a.mp4", "https://h/a.mp4"),
        ("/data/user:pw@x/a.mp4", "/data/user:pw@x/a.mp4"),  # a path, not a URL
    ],
)
def test_credentials_are_redacted_from_urls(url, shown):
    assert redact_url(url) == shown
    assert real_url(remember_url(url)) == url


def test_registered_secrets_leave_every_text():
    register_secret("Bearer-XYZ-98765")
    remember_url("http://bob:hunter2-secret@host/x.mp4")
    text = "401: key Bearer-XYZ-98765 rejected; tried http://bob:hunter2-secret@host/x.mp4 and hunter2-secret"
    out = redact(text)
    assert "XYZ-98765" not in out and "hunter2" not in out
    assert out == "401: key *** rejected; tried http://***@host/x.mp4 and ***"
