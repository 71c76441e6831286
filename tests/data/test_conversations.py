import json

import datasets
import pytest

from recipe_lib.data.conversations import load_conversations, messages_of, to_conversations
from recipe_lib.errors import DataError
from support import run_cli


@pytest.fixture(scope="module")
def clips(synth_clips):
    return datasets.load_from_disk(str(synth_clips.dataset_dir))


def test_sft_conversations(clips):
    conv = to_conversations(clips, kind="sft")
    assert conv.num_rows == clips.num_rows
    for sample, row in zip(conv, clips):
        system, user, assistant = messages_of(sample)
        assert system["role"] == "system" and "<answer>" in system["content"][0]["text"]
        video = user["content"][0]
        assert video["type"] == "video" and video["video"] == row["video_url"]
        assert video["fps"] == 16.0 and video["total_pixels"] == 8192 * 28 * 28
        assert assistant["content"][0]["text"] == f"<answer>\n{row['pc']}\n</answer>"
        assert sample["reference"] == row["pc"]


def test_grpo_conversations_have_no_answer(clips):
    conv = to_conversations(clips, kind="grpo")
    msgs = messages_of(conv[0])
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "<think>" in msgs[0]["content"][0]["text"]
    assert msgs[1]["content"][0]["fps"] == 1.0 and msgs[1]["content"][0]["max_pixels"] == 81920


def test_bad_labels_are_named(clips):
    bad = clips.map(lambda r, i: {"pc": 7 if i == 2 else r["pc"]}, with_indices=True)
    with pytest.raises(DataError, match="row 2 .*label 7"):
        to_conversations(bad)
    with pytest.raises(DataError, match="no 'video_url'"):
        to_conversations(clips.remove_columns("video_url"))


def test_cli_writes_balanced_grpo_set(synth_clips, tmp_path):
    out = tmp_path / "conv"
    r = run_cli(
        "prepare",
        "conversations",
        "--data",
        str(synth_clips.dataset_dir),
        "--kind",
        "grpo",
        "--balance-labels",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    conv = load_conversations(out)
    counts = {label: conv["pc"].count(label) for label in set(conv["pc"])}
    assert len(set(counts.values())) == 1, counts  # every label resampled to the same count
    assert all(json.loads(c)[1]["content"][0]["type"] == "video" for c in conv["conversations"])
