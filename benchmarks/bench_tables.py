"""Tables of many rows, read: how fast :func:`recipe_lib.data.tables.iter_rows` streams a table (CSV in pandas chunks,
Parquet in pyarrow record batches) as it grows, in a fresh process per table: time to the first chunk, rows per second
and peak RSS (``VmHWM``), which must not grow with the number of rows.

    python benchmarks/bench_tables.py                          # read 1 M and 10 M rows
    python benchmarks/bench_tables.py --read 10000000

Scoring such tables (time to the first clip, a rerun with nothing missing) is ``benchmarks/bench_table_scale.py``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--read", type=int, nargs="*", default=[1_000_000, 10_000_000], help="row counts to stream")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-tables-"))
    clips = make_clips(work / "clips")
    mem = [line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")][0].split()[1]
    report: dict = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.node()}: {os.cpu_count()} CPUs, {int(mem) / 1024**2:.0f} GiB, {platform.platform()}",
        "read": {},
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
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
