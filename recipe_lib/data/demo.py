"""The demo profile's data: synthetic known-truth clips, split once into ``train`` and ``eval``.

Every notebook calls :func:`ensure_demo_data`, so each runs on its own and all of them share one eval split. The clips
use the ``contrast`` render style (black background, grey floor, white objects): a tiny critic trained from scratch on a
CPU learns from these far more readily than from the ``varied`` style, which is meant for probing real critics.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from recipe_lib.config import build_dir


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
    d = dataclasses.asdict(cfg)
    d.pop("out_dir")
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
    train.save_to_disk(str(train_dir))
    evaluation.save_to_disk(str(eval_dir))
    marker.write_text(json.dumps(_fingerprint(cfg), indent=2))
    return DemoData(root, synth.dataset_dir, train_dir, eval_dir, train.num_rows, evaluation.num_rows)
