"""Answer layouts come from the prompt file: the answer_prefix / answer_format keys, the ``line`` parser (Cosmos-
Reason2's bare digit), SFT targets in the prompt's format, and cache keys of the existing prompts left unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipe_lib.errors import ConfigError
from recipe_lib.inference.parsing import parse_answer
from recipe_lib.inference.requests import generate_row
from recipe_lib.prompts import ANSWER_PREFIX, PromptSpec, load_prompt


@pytest.mark.parametrize(
    ("text", "score", "error", "well_formed"),
    [
        ("3", 3, None, True),
        ("  4.\n", 4, None, True),
        ("<think>\nthe ball hovers\n</think>\n2", 2, None, True),
        ("[Score between 1 and 5.]\n\n3", 3, None, False),  # the template echoed first: read, not well formed
        ("5\n\nThe ball falls naturally.", 5, None, False),
        ("7", None, "answer 7 is outside 1-5", False),
        ("2.5", None, "answer is not a whole number: 2.5", False),
        ("The score is 4", None, "no line holding only a score 1-5 (first line: 'The score is 4')", False),
        ("<think>it floats, so", None, "unclosed <think> block (output cut off?)", False),
        ("", None, "empty output", False),
    ],
)
def test_line_format(text: str, score: int | None, error: str | None, well_formed: bool) -> None:
    parsed = parse_answer(text, answer_format="line")
    assert (parsed.score, parsed.error, parsed.well_formed) == (score, error, well_formed)


def test_formats_are_not_mixed_up() -> None:
    tagged_in_line = parse_answer("<answer>\n4\n</answer>", answer_format="line")
    assert tagged_in_line.score == 4 and not tagged_in_line.well_formed  # the digit's own line counts, as the recipe's
    assert parse_answer("4").error == "no <answer>…</answer> block"  # tagged stays the default
    with pytest.raises(ValueError, match="unknown answer format 'xml'"):
        parse_answer("4", answer_format="xml")
    row = generate_row(["4", "4\n", "no idea"], answer_format="line")
    assert row["score"] == 4 and [t["score"] for t in row["trials"]] == [4, 4, None]


def test_existing_prompts_state_their_answer_keys_and_keep_their_cache_keys() -> None:
    # Digests from before the answer keys existed: rows cached with these prompts stay valid.
    pinned = {"video_reward": "0e58aedf26583292", "video_reward_compact": "a8083bc65dd6345f"}
    pinned["video_reward_with_thinking"] = "418587b7517110b4"
    for name, digest in pinned.items():
        spec = load_prompt(name)
        assert (spec.answer_prefix, spec.answer_format) == (ANSWER_PREFIX, "tagged")
        assert spec.digest() == digest
    reason2 = load_prompt("cosmos_reason2")
    assert (reason2.answer_prefix, reason2.answer_format) == ("", "line")
    assert reason2.system_prompt == "You are a helpful assistant."
    same_text = PromptSpec("x", reason2.system_prompt, reason2.user_prompt, ANSWER_PREFIX, "tagged")
    assert same_text.digest() != reason2.digest()  # another answer layout scores differently: another cache key


def test_sft_targets_follow_the_answer_format() -> None:
    assert load_prompt("cosmos_reason2").answer_text(4) == "4"
    assert load_prompt("video_reward").answer_text(4) == "<answer>\n4\n</answer>"
    with pytest.raises(ConfigError, match="prompt bare has no answer_format: an SFT target needs it"):
        PromptSpec("bare", "s", "u").answer_text(4)


def _write(tmp: Path, body: str) -> Path:
    path = tmp / "p.yaml"
    path.write_text("system_prompt: |\n  Judge.\nuser_prompt: |\n  Score it.\n" + body)
    return path


def test_bad_answer_keys_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown answer_format 'taged'") as exc:
        load_prompt(_write(tmp_path, "answer_format: taged\n"))
    assert exc.value.hint == "did you mean 'tagged'?"
    with pytest.raises(ConfigError, match="'answer_prefix' must be text, got int"):
        load_prompt(_write(tmp_path, "answer_prefix: 5\n"))
    with pytest.raises(ConfigError, match="unknown key 'answer_prefx'") as exc:
        load_prompt(_write(tmp_path, "answer_prefx: x\n"))
    assert exc.value.hint == "did you mean 'answer_prefix'?"
    spec = load_prompt(_write(tmp_path, 'answer_prefix: "Score: "\nanswer_format: line\n'))
    assert spec.expected_prefix() == "Score: " and spec.parse_format() == "line"


def test_cli_names_the_missing_key(tiny_critic: Path, synth_clips, tmp_path: Path) -> None:  # noqa: ANN001
    from support import run_cli

    prompt = _write(tmp_path, "")
    clip = sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[0]
    out = tmp_path / "o"
    done = run_cli("score", str(clip), "--model", str(tiny_critic), "--prompt", str(prompt), "--out", str(out))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[0] == "error: prompt p has no answer_prefix: expected mode needs it"
