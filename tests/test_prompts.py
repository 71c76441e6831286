import pytest

from recipe_lib.config import VideoSettings
from recipe_lib.errors import ConfigError
from recipe_lib.prompts import build_messages, format_answer, load_prompt


def test_shipped_prompts_load():
    plain = load_prompt("video_reward")
    thinking = load_prompt("video_reward_with_thinking")
    assert not plain.thinking and thinking.thinking
    for p in (plain, thinking):
        assert "<answer>" in p.system_prompt and "1" in p.system_prompt and "5" in p.system_prompt
        for criterion in ("Objects", "Motion and forces", "Interactions", "Consistency over time"):
            assert criterion in p.system_prompt


def test_typo_key_is_named(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("system_promt: hi\nuser_prompt: there\n")
    with pytest.raises(ConfigError) as exc:
        load_prompt(bad)
    assert "unknown key 'system_promt'" in exc.value.message
    assert "system_prompt" in exc.value.hint


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("- a\n- b\n", "must be a mapping"),
        ("system_prompt: hi\n", "missing key 'user_prompt'"),
        ("system_prompt: ''\nuser_prompt: x\n", "non-empty"),
        ("system_prompt: [unclosed\n", "not valid YAML"),
        ("!!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ],
)
def test_malformed_prompt_files(tmp_path, content, message):
    bad = tmp_path / "p.yaml"
    bad.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("'", "'")):
        load_prompt(bad)


def test_missing_prompt_lists_known():
    with pytest.raises(ConfigError) as exc:
        load_prompt("nope")
    assert "video_reward" in exc.value.hint


def test_messages_carry_video_settings():
    msgs = build_messages(
        load_prompt(),
        "/v/a.mp4",
        VideoSettings(fps=4, total_pixels=None, max_pixels=12544),
        caption="a ball",
        answer=format_answer(3),
    )
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    video = msgs[1]["content"][0]
    assert video == {"type": "video", "video": "/v/a.mp4", "fps": 4, "max_pixels": 12544}
    assert "a ball" in msgs[1]["content"][1]["text"]
    assert msgs[2]["content"][0]["text"] == "<answer>\n3\n</answer>"
