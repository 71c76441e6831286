"""The embedded demo, in one place: everything the ``demo`` profile runs on a fresh CPU machine with no hub access.

* the **demo critic**: a real Qwen2.5-VL of 0.8 M parameters built from a config with a locally trained tokenizer
  (:func:`recipe_lib.models.tiny.ensure_demo_critic`);
* the **demo clips**: synthetic known-truth physics clips rendered once and split into ``train`` / ``eval``
  (:func:`ensure_demo_data`). They use the ``contrast`` render style (black background, grey floor, white objects): a
  tiny critic trained from scratch on a CPU learns from these far more readily than from the ``varied`` style, which is
  meant for probing real critics;
* **binary labels** (:func:`binary_labels`): ``pc >= 4`` becomes 5 ("plausible"), anything lower 1 ("implausible") —
  the good-vs-bad threshold of the metrics and what ``--scale-labels`` makes of 0/1 labels for custom data. The tiny
  critic learns to tell violations from plausible motion in a few hundred steps, not the 1-5 grading of severity;
* the **compact prompt** (:data:`DEMO_PROMPT`, ``prompts/video_reward_compact.yaml``): video_reward's task and answer
  format without its ~450-token rubric, which is the same for every clip and only costs time (2.3x per step) for a
  model trained from scratch;
* the **eval split** with the labels the demo critics learn (:func:`demo_eval_split`), written once and shared by the
  training sweeps (as conversations) and the evaluation notebook (as clips);
* the **team sheet** of notebook 05 (:func:`make_demo_sheet`) and the **default critics** of notebook 06.

Stage code never asks for the profile by name: :class:`recipe_lib.profiles.Profile` carries what differs (prompt, label
mode, default critics, eval split) and the demo profile points at the functions here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import urllib.parse
from pathlib import Path
from typing import Any, Literal

from recipe_lib.config import VideoSettings, build_dir
from recipe_lib.constants import DEFAULT_THRESHOLD, LABEL_COLUMN
from recipe_lib.data.custom import TeamData
from recipe_lib.data.saving import save_dataset
from recipe_lib.errors import ConfigError, DataError
from recipe_lib.io import atomic_write_json

LabelMode = Literal["binary", "graded"]
DEMO_PROMPT = "video_reward_compact"
CONVERSATIONS_DIR = "data/conversations"
DEMO_HOST = "https://storage.example.com/renders/"
# Where notebooks 03/04 leave their trained critics (only folders that exist are used by notebook 06).
SFT_CHECKPOINT = Path("03_sft") / "checkpoints" / "final"
GRPO_CHECKPOINT = Path("04_rl_grpo") / "checkpoints" / "final"
# The side of the square the demo critic reads a clip at (see demo_video).
DEMO_READ_SIZE = 56


def demo_video() -> VideoSettings:
    """How the demo critic reads a clip: 8 frames at 4 fps, at most 56x56 pixels. A demo clip (rendered at 112x112)
    becomes a (4, 4, 4) grid of 14-pixel patches, 16 visual tokens after merging.

    Read at 112x112 (64 tokens) the demo critic learned no better — held-out accuracy after the 300 SFT steps 0.81
    against 0.81-0.83 at 56x56, 2-core machine, 2026-12-02 — and every training step took twice as long (0.49 s
    against 0.25 s), so the demo reads its clips at half their size.
    """
    return VideoSettings(fps=4.0, total_pixels=None, max_pixels=DEMO_READ_SIZE**2, min_pixels=28 * 28, max_frames=8)


def binary_labels(ds: Any, threshold: float = DEFAULT_THRESHOLD, column: str = LABEL_COLUMN) -> Any:
    """``pc >= threshold`` -> 5, else 1; the 1-5 label is kept in ``pc_graded``."""
    return ds.map(
        lambda row: {f"{column}_graded": row[column], column: 5 if row[column] >= threshold else 1},
        desc=None,
    )


def _check_label_mode(label_mode: str) -> None:
    if label_mode not in ("binary", "graded"):
        raise ConfigError(f"unknown label_mode '{label_mode}'", hint="use 'binary' or 'graded'")


# ---------------------------------------------------------------------------------------------------------------------
# clips


@dataclasses.dataclass
class DemoDataConfig:
    n: int = 800
    seed: int = 0
    style: str = "contrast"
    width: int = 112
    height: int = 112
    frames: int = 16
    fps: int = 8
    eval_fraction: float = 0.2
    out_dir: Path | None = None


@dataclasses.dataclass
class DemoData:
    root: Path
    all_dir: Path
    train_dir: Path
    eval_dir: Path
    n_train: int
    n_eval: int


def _fingerprint(cfg: DemoDataConfig) -> dict:
    from recipe_lib.data.synthetic import RECORD_COLUMNS

    d = dataclasses.asdict(cfg)
    d.pop("out_dir")
    d["columns"] = list(RECORD_COLUMNS)  # a set written before a column existed (the SA probe) is rendered again
    return d


def ensure_demo_data(cfg: DemoDataConfig | None = None) -> DemoData:
    """Render the demo clips and their stratified train/eval split if they are missing or were made differently."""
    import datasets

    from recipe_lib.data.synthetic import SynthConfig, generate_clips

    cfg = cfg or DemoDataConfig()
    root = Path(cfg.out_dir or build_dir() / "data" / "demo")
    marker = root / "demo_data.json"
    train_dir, eval_dir = root / "train", root / "eval"
    if marker.exists() and json.loads(marker.read_text()) == _fingerprint(cfg) and train_dir.exists():
        n_train = datasets.load_from_disk(str(train_dir)).num_rows
        n_eval = datasets.load_from_disk(str(eval_dir)).num_rows
        return DemoData(root, root / "clips" / "dataset", train_dir, eval_dir, n_train, n_eval)
    synth = generate_clips(
        SynthConfig(
            n=cfg.n,
            out_dir=root / "clips",
            seed=cfg.seed,
            style=cfg.style,
            width=cfg.width,  # type: ignore[arg-type]
            height=cfg.height,
            frames=cfg.frames,
            fps=cfg.fps,
        )
    )
    ds = datasets.load_from_disk(str(synth.dataset_dir))
    from recipe_lib.data.splits import stratified_split

    train, evaluation = stratified_split(ds, eval_size=cfg.eval_fraction, seed=cfg.seed, label_column="pc")
    save_dataset(train, train_dir)
    save_dataset(evaluation, eval_dir)
    atomic_write_json(marker, _fingerprint(cfg))
    return DemoData(root, synth.dataset_dir, train_dir, eval_dir, train.num_rows, evaluation.num_rows)


def demo_eval_split(label_mode: LabelMode = "binary") -> Path:
    """The demo's held-out clips with the labels the demo critics learn: binary (``pc >= 4`` -> 5, else 1; the 1-5
    label kept in ``pc_graded``, the violation columns kept for detection rates), written once beside the clips; or
    the 1-5 labels as rendered (``graded``)."""
    import datasets

    _check_label_mode(label_mode)
    data = ensure_demo_data()
    if label_mode == "graded":
        return data.eval_dir
    target = data.root / "eval_binary"
    stamp = target / "source.txt"
    source = f"{data.eval_dir}\n{(data.root / 'demo_data.json').read_text()}"  # the split's path and how it was made
    if not (stamp.exists() and stamp.read_text() == source):
        save_dataset(binary_labels(datasets.load_from_disk(str(data.eval_dir))), target)
        stamp.write_text(source)
    return target


def default_demo_critics() -> dict[str, str]:
    """The demo's critics: the untrained tiny critic (built if missing) and, when notebooks 03/04 have run, their
    fine-tuned checkpoints (``build/03_sft/checkpoints/final``, ``build/04_rl_grpo/checkpoints/final``)."""
    from recipe_lib.models.tiny import ensure_demo_critic

    critics = {"untrained": str(ensure_demo_critic())}
    for name, rel in (("sft", SFT_CHECKPOINT), ("grpo", GRPO_CHECKPOINT)):
        path = build_dir() / rel
        if path.is_dir():
            critics[name] = str(path)
    return critics


# ---------------------------------------------------------------------------------------------------------------------
# conversations (notebooks 03 and 04)


@dataclasses.dataclass
class DemoConversations:
    """Conversation datasets built from the demo clips (see the module docstring for the labels)."""

    sft_train: Path
    sft_eval: Path
    grpo_train: Path
    label_mode: str
    counts: dict[str, dict[str, int]]


def _counts(values: list[int]) -> dict[str, int]:
    from collections import Counter

    c = Counter(int(v) for v in values)
    return {str(k): c[k] for k in sorted(c)}


def prepare_demo_conversations(label_mode: LabelMode = "binary", root: Path | None = None) -> DemoConversations:
    """Write the demo conversation datasets (SFT train/eval, label-balanced GRPO train) under
    ``build/data/conversations`` — the paths ``configs/demo/*.toml`` name — unless they are already there. The eval
    conversations are made from :func:`demo_eval_split`, the clips notebook 06 evaluates."""
    import datasets

    from recipe_lib.data.conversations import ConversationsConfig, prepare_conversations
    from recipe_lib.prompts import load_prompt

    _check_label_mode(label_mode)
    data = ensure_demo_data()
    root = Path(root or build_dir() / CONVERSATIONS_DIR)
    sft_train, sft_eval, grpo_train = root / "sft" / "train", root / "sft" / "eval", root / "grpo" / "train"
    video = demo_video()
    marker_data = {
        "label_mode": label_mode,
        "prompt": load_prompt(DEMO_PROMPT).digest(),
        "demo": json.loads((data.root / "demo_data.json").read_text()),
        "demo_root": str(data.root),
        "video": dataclasses.asdict(video),
        "threshold": DEFAULT_THRESHOLD,
        "version": 1,
    }
    marker = root / "demo_conversations.json"
    if marker.exists() and all(p.exists() for p in (sft_train, sft_eval, grpo_train)):
        saved = json.loads(marker.read_text())
        if saved.get("key") == marker_data:
            return DemoConversations(sft_train, sft_eval, grpo_train, label_mode, saved["counts"])
    train = datasets.load_from_disk(str(data.train_dir))
    if label_mode == "binary":
        train = binary_labels(train)
    evaluation = datasets.load_from_disk(str(demo_eval_split(label_mode)))
    kwargs = {"prompt": DEMO_PROMPT, "video": video}
    prepare_conversations(ConversationsConfig(train, "sft", sft_train, **kwargs))
    prepare_conversations(ConversationsConfig(evaluation, "sft", sft_eval, **kwargs))
    grpo = prepare_conversations(ConversationsConfig(train, "grpo", grpo_train, balance_labels=True, **kwargs))
    counts = {
        "sft_train": _counts(train[LABEL_COLUMN]),
        "eval": _counts(evaluation[LABEL_COLUMN]),
        "grpo_train": {str(k): v for k, v in grpo.balance.after.items()},
    }
    atomic_write_json(marker, {"key": marker_data, "counts": counts})
    return DemoConversations(sft_train, sft_eval, grpo_train, label_mode, counts)


# ---------------------------------------------------------------------------------------------------------------------
# the team sheet (notebook 05)


def make_demo_sheet(data_dir: str | Path, n: int = 60, seed: int = 0) -> TeamData:
    """A labelled sheet as teams hand it over, built from the demo's synthetic clips.

    ``data_dir`` receives ``videos/`` (``n`` clips, half plausible, half with a violation), ``prompts/<stem>.txt``
    (the clip's caption) and ``labels.xlsx`` with the seed recipe's columns and *binary* labels (plausible -> 1,
    violation -> 0). Links look like real storage URLs (``https://storage.example.com/renders/<name>.mp4``). Planted
    problems, so the account of dropped rows has something to show: two links that match no file, one label outside
    0/1 and one empty row (``TeamData.planted`` maps their sheet rows to the expected reason).
    """
    import datasets
    import numpy as np
    import pandas as pd

    if n < 8:
        raise ConfigError(f"the demo sheet needs at least 8 clips, got {n}")
    ds = datasets.load_from_disk(str(ensure_demo_data().all_dir))
    rng = np.random.default_rng(seed)
    violation = list(ds["violation"])
    plausible = [i for i, v in enumerate(violation) if v == "none"]
    broken = [i for i, v in enumerate(violation) if v != "none"]
    half = n // 2
    if len(plausible) < half or len(broken) < n - half:
        raise DataError(f"the demo clips hold too few plausible/violation clips for n={n}")
    chosen = [int(i) for i in rng.choice(plausible, half, replace=False)]
    chosen += [int(i) for i in rng.choice(broken, n - half, replace=False)]
    chosen = [chosen[i] for i in rng.permutation(len(chosen))]
    data_dir = Path(data_dir)
    videos, prompts = data_dir / "videos", data_dir / "prompts"
    for folder in (videos, prompts):
        folder.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for i in chosen:
        rec = ds[i]
        src = Path(rec["video_url"])
        shutil.copyfile(src, videos / src.name)
        (prompts / f"{src.stem}.txt").write_text(str(rec["caption"]) + "\n", encoding="utf-8")
        rows.append(
            {
                "output_link": DEMO_HOST + urllib.parse.quote(src.name),
                "Action alignment": 1,
                "Physical common sense": 1 if rec["violation"] == "none" else 0,
                "Quality": 1,
            }
        )
    planted: dict[int, str] = {}
    # Data rows start on sheet row 2 (row 1 is the header).
    rows[3]["Physical common sense"] = 2
    planted[2 + 3] = "label_out_of_range"
    rows.insert(
        10,
        {
            "output_link": DEMO_HOST + "take_7_final.mp4",
            "Action alignment": 1,
            "Physical common sense": 1,
            "Quality": 1,
        },
    )
    planted[2 + 10] = "video_not_found"
    rows.insert(20, {})
    planted[2 + 20] = "empty_row"
    rows.insert(
        30,
        {
            "output_link": DEMO_HOST + "s9999_bounce_retake.mp4",
            "Action alignment": 1,
            "Physical common sense": 0,
            "Quality": 1,
        },
    )
    planted[2 + 30] = "video_not_found"
    sheet = data_dir / "labels.xlsx"
    tmp = data_dir / "labels.tmp.xlsx"
    columns = ["output_link", "Action alignment", "Physical common sense", "Quality"]
    pd.DataFrame(rows, columns=columns).to_excel(tmp, index=False, sheet_name="labels")
    os.replace(tmp, sheet)
    return TeamData(sheet, videos, prompts, planted)
