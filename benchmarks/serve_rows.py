"""Videos per second of ``plausibility score`` through one backend, at one or more request concurrencies, added as
rows to a JSON file (so a served endpoint and the in-process vLLM engine, measured one after the other on the same
clips and weights, land side by side).

    python benchmarks/serve_rows.py --label 7b --backend openai --concurrency 8 32 --model DIR --clips DIR \
        --out serve.json -- --base-url http://127.0.0.1:8011/v1 --served-model critic [score options]
    python benchmarks/serve_rows.py --label 7b --backend vllm --model DIR --clips DIR --out serve.json -- [options]

Each row is a fresh ``score_videos`` run (its own output folder, so nothing comes from the resume cache): wall
seconds, clips scored, videos/s and the run's summary. The first row of an endpoint includes no server start (the
server is up before it); the in-process vLLM row includes its engine start, also given apart when vLLM logs it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from recipe_lib.cli import build_parser  # noqa: E402
from recipe_lib.commands.score import score_config  # noqa: E402
from recipe_lib.inference.scoring import score_videos  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--label", required=True)
    p.add_argument("--backend", choices=["hf", "vllm", "openai"], required=True)
    p.add_argument("--concurrency", type=int, nargs="+", default=[8])
    p.add_argument("--model", required=True)
    p.add_argument("--clips", required=True, nargs="+")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("rest", nargs=argparse.REMAINDER, help="score options (after --)")
    args = p.parse_args(argv)
    rest = [x for x in args.rest if x != "--"]
    doc = json.loads(args.out.read_text()) if args.out.is_file() else {"rows": []}
    levels = args.concurrency if args.backend == "openai" else [None]
    for level in levels:
        tag = f"{args.label}-{args.backend}" + (f"-c{level}" if level else "")
        cli = ["score", *args.clips, "--out", str(args.out.parent / f"rows-{tag}"), "--model", args.model]
        cli += ["--backend", args.backend, *(["--concurrency", str(level)] if level else []), *rest]
        cfg = score_config(build_parser().parse_args(cli))
        start = time.perf_counter()
        scored = score_videos(cfg, progress=False)
        wall = time.perf_counter() - start
        summary = scored.summary()
        row = {
            "label": args.label,
            "backend": args.backend,
            "concurrency": level,
            "clips": summary["scored_this_run"],
            "wall_s": round(wall, 2),
            "videos_per_s": round(summary["scored_this_run"] / wall, 3) if wall > 0 else None,
            "skipped": summary["skipped"],
            "summary": summary,
        }
        doc["rows"].append(row)
        args.out.write_text(json.dumps(doc, indent=2))
        print(json.dumps({k: v for k, v in row.items() if k != "summary"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
