"""Open a result store of N rows (default 1 M) the way a rerun does, and print seconds and peak RSS.

A rerun opens ``results.sqlite``, asks which of its N keys are missing, and reads the rows of its clips back for the
exports. Building the store is done once (``--build``, rows shaped like real ones, ≈ 1 KB each); each measurement runs
in a fresh process so its peak RSS is its own::

    python benchmarks/bench_store.py --rows 1000000 --dir /tmp/store-bench
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from recipe_lib.inference.store import ResultStore, result_key


def _row(i: int) -> dict:
    key = result_key(i=i)
    return {
        "key": key,
        "video": f"/data/generated/batch{i // 10000:04d}/clip{i:07d}.mp4",
        "video_sha256": result_key(content=i) * 2,
        "model": "nvidia/Cosmos-Reason1-7B",
        "prompt": "video_reward",
        "mode": "expected",
        "score": 1 + i % 5,
        "expected_score": 3.14159,
        "probs": [0.05, 0.1, 0.2, 0.3, 0.35],
        "digit_mass": 0.998,
        "raw_output": "4",
        "parse_error": None,
        "trials": [],
        "timing": {"preprocess_s": 0.1234, "model_s": 0.0567},
        "frames": 16,
        "frame_size": [448, 448],
        "item": {"video_url": f"/data/generated/batch{i // 10000:04d}/clip{i:07d}.mp4", "caption": "x" * 300},
    }


def build(folder: Path, n: int) -> None:
    start = time.perf_counter()
    with ResultStore(folder) as store:
        for lo in range(0, n, 10000):
            store.append([_row(i) for i in range(lo, min(n, lo + 10000))])
    size = (folder / "results.sqlite").stat().st_size
    print(json.dumps({"built_rows": n, "seconds": round(time.perf_counter() - start, 1), "bytes": size}))


def measure(folder: Path, n: int, read_rows: bool) -> None:
    keys = [result_key(i=i) for i in range(n)]  # what a rerun holds anyway: the keys of its inputs
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with ResultStore(folder) as store:
        opened = time.perf_counter() - start
        missing = store.missing(keys)
        checked = time.perf_counter() - start
        n_read = sum(1 for _ in store.iter_rows()) if read_rows else 0
        total = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "rows": n,
                "open_s": round(opened, 3),
                "missing_check_s": round(checked, 2),
                "missing": len(missing),
                "stream_all_rows_s": round(total - checked, 2) if read_rows else None,
                "rows_streamed": n_read,
                "peak_rss_mib": round(peak / 1024, 1),
                "peak_rss_before_open_mib": round(base / 1024, 1),
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dir", type=Path, default=Path("/tmp/plausibility-store-bench"))
    p.add_argument("--read-rows", action="store_true", help="also stream every row back")
    p.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.measure_only:
        measure(a.dir, a.rows, a.read_rows)
        return
    a.dir.mkdir(parents=True, exist_ok=True)
    if not (a.dir / "results.sqlite").exists():
        build(a.dir, a.rows)
    cmd = [sys.executable, __file__, "--rows", str(a.rows), "--dir", str(a.dir), "--measure-only"]
    subprocess.run(cmd + (["--read-rows"] if a.read_rows else []), check=True)


if __name__ == "__main__":
    main()
