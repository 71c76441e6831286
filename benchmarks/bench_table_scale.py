"""Tables of millions of rows through ``plausibility score``, streamed: peak RSS, time to the first scored clip, and a
rerun with nothing missing.

Two measurements, each the real command in a fresh process (peak RSS from the kernel, ``VmHWM``; the first scored
clip is the store's first row, polled from outside):

* ``big``: a Parquet table of ``--rows`` rows (default 10 M) over a few real clips rendered by ``plausibility synth``
  (the first rows name them; every later row names one of them again, so it is the same content and counted as a
  duplicate skip). Scored with the demo critic on CPU; ``--limit`` stops reading after that many rows (0: the whole
  table). Time to the first scored clip, wall time, peak RSS.
* ``rerun``: a table of ``--rerun-rows`` rows (default 1 M) naming as many distinct small files, whose rows are already
  in the store (copies of one real scored row under each file's own key, written before the run, as a finished run
  leaves them): the command as a user runs it (with its report) twice, the second time with nothing missing. Wall
  time and peak RSS of the rerun.

    python benchmarks/bench_table_scale.py                               # 10 M rows (first 1 M scored), 1 M rerun
    python benchmarks/bench_table_scale.py --rows 10000000 --limit 0     # the whole 10 M-row table
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = (
    "import atexit, sys, time; from recipe_lib.cli import main\n"
    "def hwm():\n"
    "    line = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
    "    print('PEAK_RSS_MB', int(line.split()[1]) / 1024, file=sys.stderr)\n"
    "atexit.register(hwm)\n"
    "def timed(module, name, label):\n"  # the breakdown: seconds spent in each step of the command
    "    import importlib\n"
    "    mod = importlib.import_module(module)\n"
    "    inner = getattr(mod, name)\n"
    "    def wrapper(*a, **k):\n"
    "        t = time.perf_counter()\n"
    "        try:\n"
    "            return inner(*a, **k)\n"
    "        finally:\n"
    "            print('STEP', label, time.perf_counter() - t, file=sys.stderr)\n"
    "    setattr(mod, name, wrapper)\n"
    "for step in STEPS:\n"
    "    timed(*step)\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
STEPS = [
    ("recipe_lib.stages.score", "score_videos", "score_videos"),
    ("recipe_lib.inference.scoring", "_write_outputs", "  of which scores.csv, skipped.jsonl, summary.json"),
    ("recipe_lib.stages.score", "check_collapse", "collapse check"),
    ("recipe_lib.evaluation.metrics", "suite_from_rows", "metric suite"),
    ("recipe_lib.evaluation.filtering", "write_filter_outputs", "predictions and manifest"),
    ("recipe_lib.evaluation.report", "write_report", "report"),
]


def make_clips(folder: Path, n: int) -> list[str]:
    """``n`` real clips as ``plausibility synth`` renders them (the demo's contrast style)."""
    subprocess.run([sys.executable, "-m", "recipe_lib.cli", "synth", "--n", str(n), "--out", str(folder)],
                   check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    return [str(p) for p in sorted((folder / "videos").glob("*.mp4"))]


def write_table(path: Path, videos: list[str], n: int) -> Path:
    """``n`` rows cycling over ``videos``, written a million rows at a time (the writer's memory stays small)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("video_url", pa.string()), ("pc", pa.int64())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, n, 1_000_000):
            idx = range(start, min(n, start + 1_000_000))
            writer.write_table(
                pa.table({"video_url": [videos[i % len(videos)] for i in idx], "pc": [1 + i % 5 for i in idx]}, schema)
            )
    return path


def _store_rows(store: Path) -> int:
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=0.1) as db:
            return db.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.Error:
        return 0


def run_score(args: list[str], out: Path, before: int = 0) -> dict:
    """The real command; its wall time, when the store first grew past ``before`` rows, and its peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    child = f"STEPS = {STEPS!r}\n{CHILD}"
    proc = subprocess.Popen([sys.executable, "-c", child, "score", *args, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    first = None
    store = out / "results.sqlite"
    while proc.poll() is None:
        if first is None and store.exists() and _store_rows(store) > before:
            first = time.perf_counter() - start
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"score failed ({proc.returncode}):\n{stderr[-3000:]}")
    peak = [float(line.split()[1]) for line in stderr.splitlines() if line.startswith("PEAK_RSS_MB")]
    steps: dict[str, float] = {}
    for line in stderr.splitlines():
        if line.startswith("STEP "):
            label, seconds = line[5:].rsplit(" ", 1)
            steps[label] = steps.get(label, 0.0) + float(seconds)
    return {
        "steps": steps,
        "wall_s": round(wall, 1),
        "first_clip_s": round(first, 1) if first is not None else None,
        "peak_rss_mb": round(peak[0]) if peak else None,
        "summary": stdout.splitlines()[0] if stdout else "",
    }


def breakdown(run: dict) -> str:
    """The seconds of each step of a run, and what is left (the interpreter's start, imports, the CLI's checks)."""
    steps = run["steps"]
    top = sum(v for k, v in steps.items() if not k.startswith(" "))
    lines = [f"    {label}: {steps[label]:.1f} s" for _, _, label in STEPS if label in steps]
    lines.append(f"    the rest (interpreter, imports, checks, exit): {run['wall_s'] - top:.1f} s")
    return "  breakdown:\n" + "\n".join(lines)


def prefill(table: Path, model: str, out: Path, skip: set[str], template: dict) -> int:
    """Store ``template`` under the key of every clip of ``table`` but ``skip``, as a finished run would have."""
    sys.path.insert(0, str(REPO))
    from recipe_lib.inference.plan import DigestCache, iter_plan, plan_setup, resolve_settings, score_files
    from recipe_lib.inference.score_config import ScoreConfig
    from recipe_lib.inference.store import FileDigests, ResultStore
    from recipe_lib.io import claim_outputs, writes_as
    from recipe_lib.profiles import get_profile

    demo = get_profile("demo")
    cfg = ScoreConfig(inputs=[str(table)], out_dir=out, model=model, device=demo.device, dtype=demo.dtype)
    cfg, _ = resolve_settings(cfg)
    writes_as("score")(claim_outputs)(out, score_files())
    n = 0
    digests = DigestCache(FileDigests(out / "results.sqlite"))  # the files' digests, as a finished run keeps them
    with ResultStore(out / "results.sqlite") as store:
        for chunk in iter_plan(cfg, plan_setup(cfg), digests=digests):
            rows = []
            for key, item in chunk.keyed:
                if item["video_url"] not in skip:
                    digest = item.pop("video_sha256")
                    rows.append({**template, "key": key, "video": item["video_url"], "item": item,
                                 "video_sha256": digest})  # fmt: skip
            n += store.append(rows)
    digests.close()
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=10_000_000, help="rows of the big table")
    p.add_argument("--limit", type=int, default=1_000_000, help="rows of the big table read and scored (0: all)")
    p.add_argument("--rerun-rows", type=int, default=1_000_000, help="rows (distinct files) of the rerun table")
    p.add_argument("--clips", type=int, default=4, help="real clips rendered by plausibility synth")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import json

    from recipe_lib.models.tiny import demo_model_dir, ensure_demo_critic

    model = str(ensure_demo_critic(demo_model_dir()))
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-table-scale-"))
    mem = [line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")][0].split()[1]
    print(f"{os.cpu_count()} CPUs, {int(mem) / 1024**2:.0f} GiB, {platform.platform()}; {datetime.date.today()}")
    clips = make_clips(work / "synth", args.clips)
    common = ["--model", model, "--profile", "demo", "--workers", "1", "--no-report"]

    if args.rows:
        start = time.perf_counter()
        table = write_table(work / "big.parquet", clips, args.rows)
        print(f"big table: {args.rows:,} rows over {len(clips)} clips, written in {time.perf_counter() - start:.0f} s")
        limit = ["--limit", str(args.limit)] if args.limit else []
        r = run_score([str(table), *common, *limit], work / "out-big")
        read = f"first {args.limit:,}" if args.limit else "all"
        print(f"  scored ({read} rows): first clip after {r['first_clip_s']} s, done in {r['wall_s']} s, "
              f"peak RSS {r['peak_rss_mb']} MB\n  {r['summary']}")  # fmt: skip
        print(breakdown(r))

    if args.rerun_rows:
        start = time.perf_counter()
        files = work / "files"
        files.mkdir(exist_ok=True)
        names = []
        for i in range(args.rerun_rows):
            path = files / f"gen_{i:07d}.mp4"
            if not path.exists():
                path.write_bytes(b"generated clip %d\n" % i)
            names.append(str(path))
        table = write_table(work / "rerun.parquet", [*clips[:2], *names], args.rerun_rows + 2)
        template_out = work / "template"
        run_score([clips[0], *common], template_out)
        with sqlite3.connect(template_out / "results.sqlite") as db:
            template = json.loads(db.execute("SELECT row FROM results LIMIT 1").fetchone()[0])
        out = work / "out-rerun"
        n = prefill(table, model, out, set(clips[:2]), template)
        print(f"rerun table: {args.rerun_rows + 2:,} rows ({n:,} distinct files with stored rows, 2 real clips), "
              f"prepared in {time.perf_counter() - start:.0f} s")  # fmt: skip
        with_report = [a for a in common if a != "--no-report"]  # the command as a user runs it
        first = run_score([str(table), *with_report], out, before=n)
        print(f"  first run (2 clips to score): first clip after {first['first_clip_s']} s, done in "
              f"{first['wall_s']} s, peak RSS {first['peak_rss_mb']} MB\n  {first['summary']}")  # fmt: skip
        scores = (out / "scores.csv").read_bytes()
        again = run_score([str(table), *with_report], out)
        same = (out / "scores.csv").read_bytes() == scores
        print(f"  rerun (nothing missing): {again['wall_s']} s, peak RSS {again['peak_rss_mb']} MB, "
              f"scores.csv {'unchanged' if same else 'CHANGED'}\n  {again['summary']}")  # fmt: skip
        print(breakdown(again))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
