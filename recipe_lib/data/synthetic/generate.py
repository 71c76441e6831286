"""Many clips: planning, parallel rendering, and writing the clips, manifest and dataset folder.

Part of :mod:`recipe_lib.data.synthetic` (see its docstring for the clips and their labels).
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recipe_lib.data.saving import save_dataset
from recipe_lib.errors import ConfigError, DataError
from recipe_lib.io import claim_outputs, writes_as

if TYPE_CHECKING:  # pragma: no cover
    import datasets

from recipe_lib.data.synthetic.encode import h264_encoder, write_clip
from recipe_lib.data.synthetic.render import render_clip
from recipe_lib.data.synthetic.spec import (
    _BOOL_COLUMNS,
    _ID_RE,
    _INT_COLUMNS,
    RECORD_COLUMNS,
    SA_CAPTION_COLUMNS,
    SA_MATCH,
    SA_MISMATCH,
    VIOLATIONS,
    SynthConfig,
    SynthResult,
)

# --------------------------------------------------------------------------------------------------------------------
# Many clips
# --------------------------------------------------------------------------------------------------------------------


def clip_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of clip ``index`` of a set made with ``seed`` (independent of worker count)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), 1, int(index)]))


def plan_clips(cfg: SynthConfig) -> list[tuple[str, str]]:
    """(scene, violation) for each clip index: ``round(n * plausible_fraction)`` plausible clips spread over the
    scenes, the rest spread evenly over the violations (each over the scenes it applies to), in shuffled order."""
    cfg.validate()
    rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), 0]))
    scenes = cfg.selected_scenes()
    violations = cfg.selected_violations()
    n_plain = int(round(cfg.n * float(cfg.plausible_fraction)))
    plan: list[tuple[str, str]] = []
    scene_order = [scenes[int(i)] for i in rng.permutation(len(scenes))]
    plan += [(scene_order[i % len(scene_order)], "none") for i in range(n_plain)]
    usable = [v for v in violations if any(s in VIOLATIONS[v].scenes for s in scenes)]
    per_violation = {
        v: [s for s in (scenes[int(i)] for i in rng.permutation(len(scenes))) if s in VIOLATIONS[v].scenes]
        for v in usable
    }
    used: Counter[str] = Counter()
    order: list[str] = []
    for i in range(cfg.n - n_plain):
        if i % len(usable) == 0:
            order = [usable[int(j)] for j in rng.permutation(len(usable))]
        v = order[i % len(usable)]
        options = per_violation[v]
        plan.append((options[used[v] % len(options)], v))
        used[v] += 1
    return [plan[int(i)] for i in rng.permutation(len(plan))]


@dataclass(frozen=True)
class _Job:
    index: int
    clip_id: str
    scene: str
    violation: str
    path: str
    seed: int
    width: int
    height: int
    frames: int
    fps: int
    style: str


def _run_job(job: _Job) -> dict[str, Any]:
    cfg = SynthConfig(
        n=1, seed=job.seed, style=job.style, width=job.width, height=job.height, frames=job.frames, fps=job.fps
    )
    frames, fields = render_clip(job.scene, job.violation, clip_rng(job.seed, job.index), cfg)
    write_clip(frames, job.path, job.fps)
    record = {"video_url": job.path, **fields, "seed": job.seed}
    return {column: record[column] for column in RECORD_COLUMNS if column not in SA_CAPTION_COLUMNS}


# Scenes whose captions say nearly the same thing (a ball dropped onto the floor): never each other's mismatch.
_SIMILAR_SCENES = ({"free_fall", "bounce"},)


def add_sa_captions(records: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Give each record its semantic-adherence probe: for half of the clips (a seeded choice) the caption of a clip of
    another, clearly different scene with label 1 (:data:`SA_MISMATCH`), for the rest the clip's own caption with
    label 5 (:data:`SA_MATCH`). Uses its own random stream (``(seed, 2)``), so the clips and every other column are
    exactly what they would be without it. With a single scene there is nothing to mismatch: every clip matches."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
    n = len(records)
    mismatched = {int(i) for i in rng.permutation(n)[: n // 2]}
    scenes = {r["scene"] for r in records}
    distinct = {
        s: [
            j
            for j, r in enumerate(records)
            if r["scene"] != s and not any({s, r["scene"]} <= g for g in _SIMILAR_SCENES)
        ]
        for s in scenes
    }
    out = []
    for i, record in enumerate(records):
        others = distinct[record["scene"]]
        if i in mismatched and others:
            other = records[others[int(rng.integers(len(others)))]]
            out.append({**record, "sa_caption": other["caption"], "sa_caption_label": SA_MISMATCH})
        else:
            out.append({**record, "sa_caption": record["caption"], "sa_caption_label": SA_MATCH})
    return out


def _workers(requested: int, n: int) -> int:
    if requested == 0:
        try:
            requested = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not on Linux
            requested = os.cpu_count() or 1
    return max(1, min(requested, n))


def _features() -> datasets.Features:
    import datasets

    types = {c: "int64" for c in _INT_COLUMNS} | {c: "bool" for c in _BOOL_COLUMNS}
    return datasets.Features({c: datasets.Value(types.get(c, "string")) for c in RECORD_COLUMNS})


def _write_manifest(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(RECORD_COLUMNS))
            writer.writeheader()
            writer.writerows(records)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _save_dataset(dataset_dir: Path, records: list[dict[str, Any]]) -> None:
    import datasets

    tmp = dataset_dir.with_name(f".{dataset_dir.name}.{os.getpid()}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    columns = {c: [r[c] for r in records] for c in RECORD_COLUMNS}
    save_dataset(datasets.Dataset.from_dict(columns, features=_features()), tmp)
    if dataset_dir.exists():
        shutil.rmtree(dataset_dir)
    os.replace(tmp, dataset_dir)


@writes_as("synth")
def generate_clips(cfg: SynthConfig) -> SynthResult:
    """Render ``cfg.n`` clips into ``cfg.out_dir``: ``videos/<id>.mp4``, ``dataset/``, ``manifest.csv`` and
    ``summary.json``. Clips of earlier runs in ``videos/`` that this run does not produce are removed."""
    cfg.validate()
    start = time.perf_counter()
    out_dir = Path(cfg.out_dir).expanduser().resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"out_dir is a file, not a folder: {out_dir}")
    # dataset/ and manifest.csv are replaced and stale clips in videos/ deleted: only in a folder synth wrote.
    claim_outputs(out_dir, ["videos", "dataset", "manifest.csv", "summary.json"])
    videos = out_dir / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    plan = plan_clips(cfg)
    width = max(4, len(str(cfg.n - 1)))
    jobs = []
    for index, (scene, violation) in enumerate(plan):
        clip_id = f"s{index:0{width}d}_{scene}_{violation}"
        jobs.append(
            _Job(
                index, clip_id, scene, violation, str(videos / f"{clip_id}.mp4"),
                int(cfg.seed), int(cfg.width), int(cfg.height), int(cfg.frames), int(cfg.fps), str(cfg.style),
            )
        )  # fmt: skip
    workers = _workers(int(cfg.workers), len(jobs))
    if workers == 1:
        records = [_run_job(job) for job in jobs]
    else:
        import multiprocessing

        chunk = max(1, len(jobs) // (workers * 8))
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            records = list(pool.map(_run_job, jobs, chunksize=chunk))
    records = add_sa_captions(records, int(cfg.seed))

    keep = {f"{job.clip_id}.mp4" for job in jobs}
    for stale in videos.iterdir():
        if (_ID_RE.match(stale.name) and stale.name not in keep) or (
            stale.name.startswith(".s") and stale.name.endswith(".tmp")
        ):
            stale.unlink()

    dataset_dir = out_dir / "dataset"
    manifest = out_dir / "manifest.csv"
    _save_dataset(dataset_dir, records)
    _write_manifest(manifest, records)
    by_violation = Counter(r["violation"] for r in records)
    by_pc = Counter(int(r["pc"]) for r in records)
    from recipe_lib.config import to_dict

    result = SynthResult(
        out_dir=out_dir,
        dataset_dir=dataset_dir,
        manifest_csv=manifest,
        n_clips=len(records),
        counts_by_violation={v: by_violation[v] for v in ("none", *VIOLATIONS) if by_violation[v]},
        counts_by_pc={pc: by_pc[pc] for pc in sorted(by_pc)},
        codec=h264_encoder(),
        elapsed_s=time.perf_counter() - start,
        config=to_dict(cfg),
    )
    result.save(out_dir / "summary.json")
    return result


def load_synthetic(out_dir: str | Path) -> datasets.Dataset:
    """The dataset written by :func:`generate_clips` (pass its ``out_dir`` or the ``dataset`` folder itself).

    ``video_url`` points at the clips in the folder's own ``videos/`` (so a moved or copied folder still works).
    """
    import datasets

    root = Path(out_dir).expanduser().resolve()
    if (root / "dataset" / "dataset_info.json").is_file():
        dataset_dir = root / "dataset"
    elif (root / "dataset_info.json").is_file():
        dataset_dir, root = root, root.parent
    else:
        raise DataError(
            f"no synthetic dataset in {root}",
            hint=f"generate one with `plausibility synth --out {root}`",
        )
    try:
        ds = datasets.load_from_disk(str(dataset_dir))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the synthetic dataset in {dataset_dir}: {exc}") from exc
    if not isinstance(ds, datasets.Dataset):
        raise DataError(f"{dataset_dir} holds a DatasetDict, expected a single synthetic dataset")
    # Sets written before the SA probe existed lack its columns; task sa names the missing column when asked.
    missing = [c for c in RECORD_COLUMNS if c not in ds.column_names and c not in SA_CAPTION_COLUMNS]
    if missing:
        raise DataError(f"{dataset_dir} is not a synthetic dataset: missing columns {', '.join(missing)}")
    if len(ds):
        stored = Path(ds[0]["video_url"])
        local = root / "videos" / stored.name
        if local.is_file() and local != stored:
            videos = root / "videos"
            urls = [str(videos / Path(url).name) for url in ds["video_url"]]
            order = ds.column_names
            ds = ds.remove_columns("video_url").add_column("video_url", urls, feature=ds.features["video_url"])
            ds = ds.select_columns(order)
        elif not stored.is_file():
            raise DataError(
                f"the clips of {dataset_dir} are missing (looked for {stored} and {local})",
                hint="regenerate the set with `plausibility synth`",
            )
    return ds
