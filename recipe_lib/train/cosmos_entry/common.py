"""Datasets and rewards that cosmos-rl's workers use, plus the shared ``main`` of the entry scripts.

cosmos-rl's Qwen2.5-VL data packer takes one sample as a list of chat messages (the Qwen2.5-VL conversation format):
it renders them with the processor's chat template, reads the video with ``qwen_vl_utils.process_vision_info`` (which
honours the ``fps`` / ``total_pixels`` / ``max_pixels`` / ``min_pixels`` keys of the video part) and, for SFT, trains
on the assistant text, which must be a plain string. Our conversation datasets (:mod:`recipe_lib.data.conversations`)
store the messages as JSON with every content as a list of parts, so the datasets here decode them, apply the
``[custom.vision]`` overrides, and flatten the assistant turn.

GRPO samples are the prompt only ([system, user]); the label is served by ``get_reference_answer`` and scored by
:func:`plausibility_reward`, which wraps :mod:`recipe_lib.train.rewards` with the ``[custom.reward]`` choice.

Nothing here imports cosmos-rl at module level; ``main`` does, in the worker processes it launches.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch.utils.data

from recipe_lib.config import from_mapping
from recipe_lib.data.conversations import load_conversations
from recipe_lib.errors import ConfigError, DataError, RecipeError
from recipe_lib.train.config import DatasetPath, RewardConfig, VisionConfig
from recipe_lib.train.cosmos_entry import sdpa_attention
from recipe_lib.train.rewards import format_reward, reference_score, score_reward

VIDEO_KEYS = ("fps", "total_pixels", "max_pixels", "min_pixels")


def _custom(config: Any) -> Mapping[str, Any]:
    """The ``[custom]`` table of a cosmos-rl ``Config`` (or of a plain mapping)."""
    custom = getattr(config, "custom", None) if not isinstance(config, Mapping) else config.get("custom")
    return custom or {}


def vision_of(config: Any) -> VisionConfig:
    return from_mapping(VisionConfig, _custom(config).get("vision", {}), "custom.vision")


def reward_settings(config: Any) -> RewardConfig:
    return from_mapping(RewardConfig, _custom(config).get("reward", {}), "custom.reward")


def dataset_path(config: Any, key: str = "dataset") -> Path:
    table = _custom(config).get(key)
    if table is None:
        raise ConfigError(f"config has no [custom.{key}] table", hint=f'add [custom.{key}] path = "..."')
    path = from_mapping(DatasetPath, table, f"custom.{key}").path
    if not path:
        raise ConfigError(f"custom.{key}.path is empty", hint="point it at a conversation dataset on disk")
    return Path(path)


def _is_remote(video: str) -> bool:
    return video.startswith(("http://", "https://", "s3://"))


def _local_video(video: str) -> Path:
    return Path(video[len("file://") :] if video.startswith("file://") else video)


class ConversationDataset(torch.utils.data.Dataset):
    """A conversation dataset on disk, served as Qwen2.5-VL chat messages for cosmos-rl.

    ``kind="sft"``: [system, user(video + text), assistant(str)] — the assistant turn is required.
    ``kind="grpo"``: [system, user(video + text)] — the label comes from :meth:`get_reference_answer`.

    Every clip path is checked when the dataset is opened, so a missing file stops the run before any GPU work
    instead of failing a worker mid-epoch.
    """

    def __init__(
        self,
        path: str | Path,
        kind: str = "sft",
        vision: VisionConfig | None = None,
        column: str = "conversations",
        check_videos: bool = True,
    ) -> None:
        if kind not in ("sft", "grpo"):
            raise ConfigError(f"unknown dataset kind '{kind}'", hint="use 'sft' or 'grpo'")
        self.path = Path(path)
        self.kind = kind
        self.vision = vision or VisionConfig()
        self.column = column
        self.data = load_conversations(self.path)
        if column not in self.data.column_names:
            columns = ", ".join(self.data.column_names)
            raise DataError(f"{self.path} has no '{column}' column", hint=f"columns: {columns}")
        if len(self.data) == 0:
            raise DataError(f"{self.path} holds no samples")
        self._references = self._read_references() if kind == "grpo" else None
        if check_videos:
            self._check_videos()

    @classmethod
    def from_cosmos_config(cls, config: Any, kind: str, key: str = "dataset") -> ConversationDataset:
        """The dataset named by ``[custom.<key>]`` with the ``[custom.vision]`` overrides."""
        policy = getattr(getattr(config, "train", None), "train_policy", None)
        column = getattr(policy, "conversation_column_name", None)
        return cls(dataset_path(config, key), kind=kind, vision=vision_of(config), column=column or "conversations")

    def __len__(self) -> int:
        return len(self.data)

    def messages(self, idx: int) -> list[dict[str, Any]]:
        """Raw decoded messages of sample ``idx``."""
        raw = self.data[int(idx)][self.column]
        try:
            messages = json.loads(raw)
        except (TypeError, json.JSONDecodeError) as exc:
            raise DataError(f"{self.path} sample {idx}: '{self.column}' is not a JSON message list") from exc
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise DataError(f"{self.path} sample {idx}: '{self.column}' is not a list of chat messages")
        return messages

    def __getitem__(self, idx: int) -> list[dict[str, Any]]:
        messages = copy.deepcopy(self.messages(idx))
        overrides = self.vision.overrides()
        out: list[dict[str, Any]] = []
        for message in messages:
            role = message["role"]
            if role == "assistant":
                if self.kind == "grpo":
                    continue  # the policy writes this turn
                message = {"role": "assistant", "content": _text_of(message["content"])}
            elif overrides and isinstance(message.get("content"), list):
                for part in message["content"]:
                    if isinstance(part, dict) and part.get("type") == "video":
                        part.update(overrides)
            out.append(message)
        if self.kind == "sft" and (not out or out[-1]["role"] != "assistant"):
            raise DataError(
                f"{self.path} sample {idx} has no assistant answer to train on",
                hint="build SFT data with to_conversations(kind='sft')",
            )
        return out

    def get_reference_answer(self, idx: int) -> str:
        """The label of sample ``idx`` as a digit string (what the reward functions receive)."""
        if self._references is None:
            raise DataError("reference answers are served by GRPO datasets only")
        return str(self._references[int(idx)])

    def video_of(self, idx: int) -> str:
        for message in self.messages(idx):
            content = message.get("content")
            if isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and part.get("type") == "video":
                        return str(part["video"])
        raise DataError(f"{self.path} sample {idx} has no video part")

    def _read_references(self) -> list[int]:
        columns = self.data.column_names
        if "reference" in columns:
            raw = self.data["reference"]
            source = "reference"
        elif "pc" in columns:
            raw = self.data["pc"]
            source = "pc"
        else:  # a dataset in the cookbook's form: the label is the assistant answer
            raw = [_text_of(self.messages(i)[-1]["content"]) for i in range(len(self.data))]
            source = "assistant answer"
        refs = []
        for i, value in enumerate(raw):
            try:
                refs.append(reference_score(value))
            except DataError as exc:
                raise DataError(f"{self.path} sample {i}: bad label in '{source}': {exc.message}") from exc
        return refs

    def _check_videos(self) -> None:
        missing = []
        for i in range(len(self.data)):
            video = self.video_of(i)
            if not _is_remote(video) and not _local_video(video).is_file():
                missing.append(video)
        if missing:
            raise DataError(
                f"{self.path}: {len(missing)} of {len(self.data)} videos not found (first: {missing[0]})",
                hint="paths are read as written in the dataset: rebuild it with absolute paths, or launch from the "
                "folder they are relative to",
            )


def _text_of(content: Any) -> str:
    """The text of a message content (a string, or a list of parts of which the text parts are joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text" and "text" in p]
        if texts:
            return "".join(texts)
    raise DataError(f"assistant content has no text: {content!r}")


def plausibility_reward(
    to_be_evaluated: str, reference: Any, *args: Any, config: Any = None, **kwargs: Any
) -> tuple[float, dict[str, float]]:
    """cosmos-rl reward function: the ``[custom.reward]`` choice of :mod:`recipe_lib.train.rewards`.

    Returns the total and its parts (``score_reward``, ``format_reward``), which cosmos-rl logs per completion.
    """
    settings = reward_settings(config) if config is not None else RewardConfig()
    score = score_reward(settings.score, to_be_evaluated, reference)
    fmt = format_reward(to_be_evaluated)
    return score + settings.format_weight * fmt, {"score_reward": score, "format_reward": fmt}


def read_video_pyav(ele: Mapping[str, Any]) -> tuple[Any, dict[str, Any], float]:
    """A qwen-vl-utils video reader on PyAV (:mod:`recipe_lib.video`): the frames qwen-vl-utils' own sampling picks
    (``smart_nframes``: the message's ``fps`` / ``nframes`` and frame limits) as a uint8 ``(T, C, H, W)`` tensor, with
    the metadata and sample fps its readers return. Only the frames kept are decoded."""
    import numpy as np
    from qwen_vl_utils.vision_process import smart_nframes

    from recipe_lib.video import probe, read_frames

    path = _local_video(str(ele["video"]))
    info = probe(path)
    nframes = smart_nframes(ele, total_frames=info.frames, video_fps=info.fps)
    idx = [int(round(x)) for x in np.linspace(0, info.frames - 1, nframes)]
    frames = torch.from_numpy(read_frames(path, idx)).permute(0, 3, 1, 2).contiguous()
    meta = {
        "fps": info.fps,
        "frames_indices": torch.tensor(idx),
        "total_num_frames": info.frames,
        "video_backend": "pyav",
    }
    return frames, meta, nframes / max(info.frames, 1e-6) * info.fps


def use_pyav_video_reader() -> bool:
    """Make qwen-vl-utils read videos with :func:`read_video_pyav` where its default reader cannot work: it falls
    back to ``torchvision.io.read_video``, which torchvision 0.26 (the CUDA machines' torch 2.11 set) no longer has,
    and decord / torchcodec are not installed. Every cosmos-rl worker calls this before reading a clip; True when it
    took over."""
    import torchvision.io
    from qwen_vl_utils import vision_process

    if hasattr(torchvision.io, "read_video"):
        return False
    vision_process.VIDEO_READER_BACKENDS["pyav"] = read_video_pyav
    vision_process.VIDEO_READER_BACKENDS["torchvision"] = read_video_pyav  # its fallback after any reader fails
    vision_process.FORCE_QWENVL_VIDEO_READER = "pyav"
    cached = getattr(vision_process.get_video_reader_backend, "cache_clear", None)
    if cached is not None:  # qwen-vl-utils remembers the backend it chose first
        cached()
    return True


def main(kind: str, argv: list[str] | None = None) -> None:
    """Entry point run by cosmos-rl in the controller and in every worker (``--config`` is passed by the launcher)."""
    import argparse

    import toml
    from cosmos_rl.launcher.worker_entry import main as launch_worker
    from cosmos_rl.policy.config import Config

    parser = argparse.ArgumentParser(description=f"cosmos-rl {kind} entry for recipe_lib conversation datasets")
    parser.add_argument("--config", required=True, help="the TOML config cosmos-rl was started with")
    args, _ = parser.parse_known_args(argv)
    use_pyav_video_reader()
    with open(args.config, encoding="utf-8") as fh:
        config = Config.from_dict(toml.load(fh))

    def train_set(cfg: Any) -> ConversationDataset:
        return ConversationDataset.from_cosmos_config(cfg, kind)

    def eval_set(cfg: Any) -> ConversationDataset:
        return ConversationDataset.from_cosmos_config(cfg, kind, key="eval_dataset")

    # Open once here so a bad path, label or clip stops this process with one clear line, before any GPU work.
    try:
        first = train_set(config)
        first[0]
        has_eval = bool(config.validation.enable and "eval_dataset" in _custom(config))
        if has_eval:
            eval_set(config)
        if kind == "grpo":
            reward_settings(config)
    except RecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    if sdpa_attention.install():  # before cosmos-rl builds its model (its layers take the functions then)
        print("flash-attn is not installed: cosmos-rl's attention runs on torch SDPA", flush=True)
    if kind == "grpo":
        launch_worker(
            dataset=train_set,
            val_dataset=eval_set if has_eval else None,
            reward_fns=[plausibility_reward],
            val_reward_fns=[plausibility_reward] if has_eval else None,
        )
    else:
        launch_worker(dataset=train_set, val_dataset=eval_set if has_eval else None)
