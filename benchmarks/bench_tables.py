"""Tables of many rows: how ``plausibility score TABLE`` behaves as a table grows.

Two measurements, each in a fresh process (peak RSS read from the kernel, ``VmHWM``):

* ``read``: the table streamed by :func:`recipe_lib.data.tables.iter_rows` (CSV in pandas chunks, Parquet in pyarrow
  record batches): rows per second and peak RSS, which must not grow with the number of rows.
* ``score``: the real command on the table (rows pointing at a few small real clips under their own paths, so most
  rows are duplicates of an earlier clip and counted as skips), with the real tiny critic: time to the first scored
  clip (the store's first row, polled from outside), wall time and peak RSS; then the same command again (nothing
  missing: every key is in the store).

    python benchmarks/bench_tables.py                          # read 1 M and 10 M rows; score 200 k rows
    python benchmarks/bench_tables.py --read 10000000 --score 1000000

Figures measured on the development machine are in the README's Reliability section.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

READ_CHILD = """
import sys, time
from recipe_lib.data.tables import iter_rows
start = time.perf_counter()
n = first = 0
for rows in iter_rows(sys.argv[1]):
    if not n:
        first = time.perf_counter() - start
    n += len(rows)
seconds = time.perf_counter() - start
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
print(n, first, seconds, int(hwm) / 1024)
"""


def make_clips(folder: Path, n: int = 4) -> list[str]:
    import numpy as np

    from recipe_lib.data.synthetic import write_clip

    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in range(n):
        frames = np.zeros((8, 64, 64, 3), np.uint8)
        frames[:, :, i * 10 : i * 10 + 16] = 255
        clips.append(str(write_clip(frames, folder / f"clip{i}.mp4", fps=8)))
    return clips


def make_table(path: Path, clips: list[str], n: int) -> Path:
    """``n`` rows cycling over ``clips``, written in slices (the writer's memory stays small too)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    step = 1_000_000
    schema = pa.schema([("video_url", pa.string()), ("pc", pa.int64())])
    writer = pq.ParquetWriter(path, schema) if path.suffix == ".parquet" else None
    with open(path, "wb") if writer is None else open(os.devnull, "wb") as fh:
        for start in range(0, n, step):
            idx = range(start, min(n, start + step))
            table = pa.table({"video_url": [clips[i % len(clips)] for i in idx], "pc": [1 + i % 5 for i in idx]})
            if writer is not None:
                writer.write_table(table.cast(schema))
            else:
                pacsv.write_csv(table, fh, pacsv.WriteOptions(include_header=start == 0))
    if writer is not None:
        writer.close()
    return path


def measure_read(table: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", READ_CHILD, str(table)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"reading {table} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    n, first, seconds, rss = out.stdout.split()
    return {"rows": int(n), "first_chunk_s": float(first), "seconds": float(seconds), "peak_rss_mb": float(rss)}


def _rows(store: Path) -> int:
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=0.1) as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.Error:
        return 0


def measure_score(table: Path, model: str, out: Path) -> dict[str, float]:
    """The real command; peak RSS of the child from its /proc status (VmHWM) just before it exits."""
    code = (
        "import atexit, sys; from recipe_lib.cli import main\n"
        "def hwm():\n"
        "    line = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "    print('PEAK_RSS_MB', int(line.split()[1]) / 1024, file=sys.stderr)\n"
        "atexit.register(hwm)\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = ["score", str(table), "--model", model, "--out", str(out), "--workers", "1", "--no-report"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip
    first = None
    store = out / "results.sqlite"
    while proc.poll() is None:
        if first is None and store.exists() and _rows(store) > 0:
            first = time.perf_counter() - start
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"score failed ({proc.returncode}):\n{stderr[-3000:]}")
    peak = [float(line.split()[1]) for line in stderr.splitlines() if line.startswith("PEAK_RSS_MB")]
    return {
        "wall_s": round(wall, 2),
        "first_clip_s": round(first, 2) if first is not None else None,
        "peak_rss_mb": round(peak[0], 1) if peak else None,
        "summary": stdout.splitlines()[0] if stdout else "",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--read", type=int, nargs="*", default=[1_000_000, 10_000_000], help="row counts to stream")
    p.add_argument("--score", type=int, nargs="*", default=[200_000], help="row counts to score (and rescore)")
    p.add_argument("--model", default=None, help="critic folder (default: the demo critic, built if missing)")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from recipe_lib.models.tiny import demo_model_dir, ensure_demo_critic

    model = args.model or str(ensure_demo_critic(demo_model_dir()))
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-tables-"))
    clips = make_clips(work / "clips")
    mem = [line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")][0].split()[1]
    report: dict = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.node()}: {os.cpu_count()} CPUs, {int(mem) / 1024**2:.0f} GiB, {platform.platform()}",
        "read": {},
        "score": {},
    }
    print(report["machine"], report["date"])
    for n in args.read:
        for suffix in (".csv", ".parquet"):
            table = make_table(work / f"t{n}{suffix}", clips, n)
            r = measure_read(table)
            report["read"][f"{n}{suffix}"] = r
            print(f"read {n:>10} rows {suffix:8}: first chunk {r['first_chunk_s']:.2f} s, all {r['seconds']:.1f} s "
                  f"({n / r['seconds']:,.0f} rows/s), peak RSS {r['peak_rss_mb']:.0f} MB")  # fmt: skip
            table.unlink()
    for n in args.score:
        table = make_table(work / f"s{n}.csv", clips, n)
        out = work / f"out{n}"
        first = measure_score(table, model, out)
        again = measure_score(table, model, out)
        report["score"][str(n)] = {"first": first, "rerun": again}
        print(f"score {n:>9} rows: first clip after {first['first_clip_s']} s, done in {first['wall_s']} s, "
              f"peak RSS {first['peak_rss_mb']} MB; rerun (nothing missing) {again['wall_s']} s, "
              f"peak RSS {again['peak_rss_mb']} MB")  # fmt: skip
        print(f"  {first['summary']}\n  {again['summary']}")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
