"""Values a careless or hostile source hands the scoring code: runaway answers, log-probabilities that are no
probabilities, URLs and texts that carry credentials. The end-to-end cases are in
``tests/reliability/test_gauntlet_round3.py``; these pin the functions every path goes through."""

from __future__ import annotations

import dataclasses
import math

import pytest

from recipe_lib.inference.parsing import parse_answer
from recipe_lib.inference.requests import SKIP, InvalidLogprobs, row_from_answer_logprobs, row_from_logprobs
from recipe_lib.inference.vllm import row_from_output
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


# --------------------------------------------------------------------------------------------------------------------
# the in-process vLLM backend's outputs (vLLM is not needed: containers with the fields of vllm's RequestOutput,
# CompletionOutput and Logprob, read by the backend's real conversion function)


@dataclasses.dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclasses.dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None


@dataclasses.dataclass
class RequestOutput:
    request_id: str
    outputs: list[CompletionOutput]


DIGIT_IDS = [16, 17, 18, 19, 20]  # the token ids of "1".."5" (Qwen's)
OTHER_ID = 151643  # a token that is no digit


def _output(values: dict[int, float], sampled: int = 19) -> RequestOutput:
    step = {tid: Logprob(v, rank=i + 1, decoded_token=str(tid)) for i, (tid, v) in enumerate(values.items())}
    return RequestOutput("0", [CompletionOutput(0, "4", [sampled], None, [step])])


def _digits(p1: float, p2: float, p3: float, p4: float, p5: float) -> dict[int, float]:
    return {tid: math.log(p) if p else -math.inf for tid, p in zip(DIGIT_IDS, [p1, p2, p3, p4, p5])}


def test_vllm_digit_log_probabilities_become_an_expected_row():
    row = row_from_output(_output(_digits(0.05, 0.05, 0.1, 0.6, 0.0)), "expected", DIGIT_IDS, "tagged")
    assert SKIP not in row and row["score"] == 4
    assert row["probs"] == pytest.approx([0.0625, 0.0625, 0.125, 0.75, 0.0])
    assert row["digit_mass"] == pytest.approx(0.8)
    generated = RequestOutput(
        "1", [CompletionOutput(i, t, [], None, None) for i, t in enumerate(["<answer>3</answer>"] * 2)]
    )
    assert row_from_output(generated, "generate", DIGIT_IDS, "tagged")["score"] == 3


@pytest.mark.parametrize(
    ("where", "bad", "shown"),
    [
        ("digit", math.nan, "log-probability nan of answer token '5'"),
        ("digit", math.inf, "log-probability inf of answer token '5'"),
        ("digit", 1000.0, "log-probability 1000.0 of answer token '5'"),
        ("digit", 1e300, "log-probability 1e+300 of answer token '5'"),
        ("other", math.nan, f"log-probability nan of answer token '<token id {OTHER_ID}>'"),
    ],
)
def test_vllm_log_probabilities_that_are_no_probabilities_are_skips(where, bad, shown):
    values = _digits(0.1, 0.1, 0.1, 0.6, 0.1)
    if where == "digit":
        values[DIGIT_IDS[4]] = bad  # a NaN on 5: dropped, it would leave p4 = 0.6 / 0.9 and no word
    else:
        values[OTHER_ID] = bad
    row = row_from_output(_output(values), "expected", DIGIT_IDS, "tagged")
    assert set(row) == {SKIP}, "a skip row holds nothing but its reason, so nothing of it is stored"
    assert row[SKIP] == f"the engine's answer holds an invalid log-probability: {shown} is not a number at most 0"


def test_vllm_answers_without_every_requested_digit_are_skips():
    values = _digits(0.1, 0.1, 0.1, 0.6, 0.1)
    del values[DIGIT_IDS[1]], values[DIGIT_IDS[4]]
    row = row_from_output(_output(values), "expected", DIGIT_IDS, "tagged")
    assert row == {SKIP: "the engine's answer lacks the log-probability of the digit(s) 2, 5 it was asked for"}
    empty = RequestOutput("2", [CompletionOutput(0, "", [], None, None)])
    assert "no log-probabilities" in row_from_output(empty, "expected", DIGIT_IDS, "tagged")[SKIP]
    assert "no log-probabilities" in row_from_output(RequestOutput("3", []), "expected", DIGIT_IDS, "tagged")[SKIP]


def test_the_endpoint_and_vllm_share_one_reading_of_answer_log_probabilities():
    pairs = [("4", math.log(0.6)), (" 4", math.log(0.1)), ("x", -0.1), ("2", math.log(0.2))]
    row = row_from_answer_logprobs(pairs, "the endpoint's answer")
    assert row["probs"] == pytest.approx([0.0, 0.25, 0.0, 0.75, 0.0])  # " 4" and "4" both stand for 4: the larger
    none = row_from_answer_logprobs([("x", -0.1), ("y", -3.0)], "the endpoint's answer")
    assert (
        none["score"] is None and none["parse_error"] == "none of the digits 1-5 is among the 2 answer tokens returned"
    )
    nan = row_from_answer_logprobs([("x", math.nan), ("4", -0.1)], "the endpoint's answer")
    assert nan == {SKIP: "the endpoint's answer holds an invalid log-probability: log-probability nan of answer token "
                   "'x' is not a number at most 0"}  # fmt: skip
