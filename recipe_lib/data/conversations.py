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

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

from recipe_lib.config import VideoSettings
from recipe_lib.constants import LABEL_COLUMN
from recipe_lib.errors import DataError
from recipe_lib.prompts import PromptSpec, build_messages, load_prompt


def conversation_for(
    row: dict[str, Any],
    prompt: PromptSpec,
    video: VideoSettings,
    kind: str,
    label_column: str = "pc",
    use_caption: bool = False,
) -> list[dict[str, Any]]:
    label = int(row[label_column])
    answer = prompt.answer_text(label) if kind == "sft" else None  # in the prompt's answer_format
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


def check_conversations_out(out_dir: str | Path, source: Any = None) -> None:
    """``out_dir`` may be (re)written: it is not the source table or inside it (nor holds it), it is not a link, and
    when it exists and is not empty it is a conversation dataset (what this stage writes), not someone's folder."""
    from recipe_lib.io import refuse_symlink

    out = Path(out_dir)
    refuse_symlink(out)
    if isinstance(source, str | Path):
        src, dst = Path(source).resolve(), out.resolve()
        if src == dst or dst in src.parents or src in dst.parents:
            raise DataError(
                f"--out {out} overlaps the source data {source}: writing it would replace the data being read",
                hint="choose an --out folder outside the source data",
            )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        info = out / "dataset_info.json"
        try:
            ours = "conversations" in json.loads(info.read_text(encoding="utf-8")).get("features", {})
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise DataError(
                f"output folder {out} exists and is not a conversation dataset written by this command",
                hint="choose a new --out folder or empty this one",
            )


def save_conversations(ds: Any, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    check_conversations_out(out_dir)
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


@dataclasses.dataclass
class ConversationsConfig:
    """``plausibility prepare conversations``: a clip dataset (a folder, a table, or a ``datasets.Dataset``) to a
    conversation dataset in ``out_dir``; ``balance_labels`` resamples every label to the mean count first (GRPO)."""

    data: Any
    kind: Literal["sft", "grpo"]
    out_dir: Path
    prompt: str | None = None  # default: video_reward (sft), video_reward_with_thinking (grpo)
    video: VideoSettings | None = None  # default: the recipe's settings for the kind
    balance_labels: bool = False
    seed: int = 42
    use_caption: bool = False
    label_column: str = LABEL_COLUMN


@dataclasses.dataclass
class ConversationsResult:
    out_dir: Path
    kind: str
    n: int
    balance: Any | None = None  # recipe_lib.data.splits.BalanceReport when balanced

    def summary_lines(self) -> list[str]:
        lines = []
        if self.balance is not None:
            b = self.balance
            lines.append(f"balanced to {b.target} clips per label: before {b.before}, after {b.after}")
        return [*lines, f"{self.n} {self.kind} conversations -> {self.out_dir}"]


def prepare_conversations(cfg: ConversationsConfig) -> ConversationsResult:
    """Write the conversation dataset the trainers read (see the module docstring)."""
    import datasets

    from recipe_lib.data.splits import balance_labels
    from recipe_lib.data.tables import load_rows

    check_conversations_out(cfg.out_dir, cfg.data)  # before any work
    ds = cfg.data if isinstance(cfg.data, datasets.Dataset) else datasets.Dataset.from_list(load_rows(cfg.data))
    report = None
    if cfg.balance_labels:
        ds, report = balance_labels(ds, cfg.label_column, cfg.seed)
    conv = to_conversations(ds, cfg.kind, cfg.prompt, cfg.video, cfg.label_column, cfg.use_caption)
    return ConversationsResult(save_conversations(conv, cfg.out_dir), cfg.kind, conv.num_rows, report)
