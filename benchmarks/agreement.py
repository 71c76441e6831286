"""Agreement of two scoring backends on identical weights: the same clips scored by each, row by row.

    python benchmarks/agreement.py --model DIR --clips DIR --out agreement.json [--a hf --b vllm] [-- score options]

Both runs go through ``plausibility score``'s own code (:func:`recipe_lib.inference.scoring.score_videos`) with the
same prompt, video settings and weights; the report gives max |Δp(1..5)|, the share of clips whose argmax score agrees
and the largest expected-score difference. Extra ``score`` options (after ``--``) apply to both runs.
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


def compare(rows_a: list[dict], rows_b: list[dict]) -> dict:
    by_video = {r["video"]: r for r in rows_b}
    pairs = [(a, by_video[a["video"]]) for a in rows_a if a["video"] in by_video]
    probs = [(a, b) for a, b in pairs if a.get("probs") and b.get("probs")]
    return {
        "per_clip": [
            {
                "video": Path(a["video"]).name,
                "a": a.get("probs"),
                "b": b.get("probs"),
                "score_a": a["score"],
                "score_b": b["score"],
                "frames": a.get("frames"),
                "frame_size": a.get("frame_size"),
            }
            for a, b in pairs
        ],  # fmt: skip
        "clips": len(pairs),
        "max_abs_dprob": max((max(abs(x - y) for x, y in zip(a["probs"], b["probs"])) for a, b in probs), default=None),
        "argmax_agreement": sum(a["score"] == b["score"] for a, b in pairs) / len(pairs) if pairs else None,
        # a clip without an expected score on either side (unparsed, skipped by the server) is counted, not compared
        "clips_without_expected": sum(
            a.get("expected_score") is None or b.get("expected_score") is None for a, b in pairs
        ),
        "max_abs_dexpected": max(
            (
                abs(a["expected_score"] - b["expected_score"])
                for a, b in pairs
                if a.get("expected_score") is not None and b.get("expected_score") is not None
            ),
            default=None,
        ),
        "mean_abs_dexpected": (
            sum(abs(a["expected_score"] - b["expected_score"]) for a, b in probs) / len(probs) if probs else None
        ),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--clips", required=True, nargs="+")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--a", default="hf")
    p.add_argument("--b", default="vllm")
    p.add_argument("--label", default="", help="a name for this comparison in the output")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="score options for both runs (after --)")
    args = p.parse_args(argv)
    rest = [x for x in args.rest if x != "--"]
    work = args.out.parent / f"agreement-{args.label or Path(args.model).name}"
    result = {"label": args.label, "model": args.model, "backends": [args.a, args.b], "runs": {}}
    rows = {}
    for backend in (args.a, args.b):
        cli = ["score", *args.clips, "--out", str(work / backend), "--model", args.model, "--backend", backend, *rest]
        cfg = score_config(build_parser().parse_args(cli))
        start = time.perf_counter()
        scored = score_videos(cfg, progress=False)
        rows[backend] = scored.rows
        result["runs"][backend] = {**scored.summary(), "wall_s": round(time.perf_counter() - start, 2)}
    result["agreement"] = compare(rows[args.a], rows[args.b])
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result["agreement"].items() if k != "per_clip"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
