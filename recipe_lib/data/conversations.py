"""Training datasets in conversation form, shared by the in-process trainers and the cosmos-rl entry scripts.

A conversation dataset is a ``datasets.Dataset`` saved with ``save_to_disk`` whose ``conversations`` column holds a JSON
string: the list [system, user(video + text), assistant(answer)] in the chat-message format of
:func:`recipe_lib.prompts.build_messages`. The video part carries the sampling keys (``fps`` and ``total_pixels`` /
``max_pixels`` / ``min_pixels``), so every sample says how its clip is to be read.

``kind="sft"``   the assistant turn is the target ``<answer>\\nN\\n</answer>``.
``kind="grpo"``  no assistant turn (the policy writes it); the label is kept in ``reference`` for the reward.

Other columns kept: ``video_url``, ``pc`` (the label), ``reference`` (int label), ``caption`` when present, and
``source_index`` (the row in the input dataset) so every sample can be traced back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from recipe_lib.config import VideoSettings
from recipe_lib.errors import DataError
from recipe_lib.prompts import PromptSpec, build_messages, format_answer, load_prompt


def conversation_for(
    row: dict[str, Any],
    prompt: PromptSpec,
    video: VideoSettings,
    kind: str,
    label_column: str = "pc",
    use_caption: bool = False,
) -> list[dict[str, Any]]:
    label = int(row[label_column])
    answer = format_answer(label) if kind == "sft" else None
    caption = row.get("caption") if use_caption else None
    return build_messages(prompt, row["video_url"], video, caption=caption, answer=answer)


def to_conversations(
    ds: Any,
    kind: Literal["sft", "grpo"] = "sft",
    prompt: str | PromptSpec | None = None,
    video: VideoSettings | None = None,
    label_column: str = "pc",
    use_caption: bool = False,
) -> Any:
    """Turn a clip dataset (``video_url`` + label) into a conversation dataset (see module docstring).

    Defaults follow the recipe: SFT uses ``video_reward`` with the inference video settings; GRPO uses
    ``video_reward_with_thinking`` with fps 1 and max_pixels 81920.
    """
    import datasets

    if kind not in ("sft", "grpo"):
        raise DataError(f"unknown conversation kind '{kind}'", hint="use 'sft' or 'grpo'")
    for column in ("video_url", label_column):
        if column not in ds.column_names:
            raise DataError(f"dataset has no '{column}' column", hint=f"columns: {', '.join(ds.column_names)}")
    if prompt is None:
        prompt = "video_reward" if kind == "sft" else "video_reward_with_thinking"
    spec = prompt if isinstance(prompt, PromptSpec) else load_prompt(prompt)
    if video is None:
        video = VideoSettings() if kind == "sft" else VideoSettings(fps=1.0, total_pixels=None, max_pixels=81920)
    records: dict[str, list[Any]] = {
        "conversations": [],
        "video_url": [],
        "pc": [],
        "reference": [],
        "caption": [],
        "source_index": [],
    }
    for i, row in enumerate(ds):
        value = row[label_column]
        if value is None or int(value) != value or not 1 <= int(value) <= 5:
            raise DataError(
                f"row {i} ({row['video_url']}): label {value!r} is not a whole number 1-5",
                hint="scale or clean labels first (recipe_lib.data.splits)",
            )
        conv = conversation_for(row, spec, video, kind, label_column, use_caption)
        records["conversations"].append(json.dumps(conv, ensure_ascii=False))
        records["video_url"].append(str(row["video_url"]))
        records["pc"].append(int(value))
        records["reference"].append(int(value))
        records["caption"].append(str(row.get("caption") or ""))
        records["source_index"].append(i)
    return datasets.Dataset.from_dict(records)


def save_conversations(ds: Any, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    ds.save_to_disk(str(out_dir))
    return out_dir


def load_conversations(path: str | Path) -> Any:
    """A conversation dataset from disk, checked for the ``conversations`` column."""
    import datasets

    path = Path(path)
    if not path.exists():
        raise DataError(f"conversation dataset not found: {path}")
    ds = datasets.load_from_disk(str(path))
    if "conversations" not in ds.column_names:
        raise DataError(f"{path} has no 'conversations' column", hint="build it with to_conversations()")
    return ds


def messages_of(sample: dict[str, Any]) -> list[dict[str, Any]]:
    """The decoded message list of one sample."""
    return json.loads(sample["conversations"])
