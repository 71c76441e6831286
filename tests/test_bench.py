"""The scoring benchmark's quick CPU form: it runs, and its JSON and Markdown have the promised structure.

Timings are never asserted (the machine is shared); structure and sanity are.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from support import REPO

BENCH = REPO / "benchmarks" / "bench_scoring.py"
ROW_KEYS = {
    "key",
    "workload",
    "visual_tokens",
    "seq_len",
    "mode",
    "new_tokens",
    "batch",
    "variant",
    "videos",
    "seconds",
    "videos_per_s",
    "prompt_tokens_per_s",
    "generated_tokens_per_s",
    "per_video_s",
    "shares",
    "peak_memory_gb",
    "vs_naive",
    "padding_share",
}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--device", "cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout, out


@pytest.mark.slow
def test_quick_benchmark_json(quick):
    result, stdout, _ = quick
    assert result["schema"] == "plausibility-bench/1" and not result["errors"] and not result["skipped_for_time"]
    env = result["environment"]
    assert env["device"] == "cpu" and env["device_name"].startswith("CPU") and env["transformers"] and env["torch"]
    assert set(result["workloads"]) == {"demo", "2k"}
    assert result["workloads"]["2k"]["visual_tokens"] == 1900  # 20 frames of 280x532 from a 5 s 720p clip
    rows = result["rows"]
    assert len(rows) == 14
    for row in rows:
        assert set(row) >= ROW_KEYS, ROW_KEYS - set(row)
        assert row["videos"] > 0 and row["seconds"] > 0 and row["videos_per_s"] > 0 and row["vs_naive"] > 0
        assert row["seq_len"] > row["visual_tokens"] > 0
        shares = [v for v in row["shares"].values() if v is not None]
        assert all(0 <= v <= 1 for v in shares) and sum(shares) == pytest.approx(1, abs=1e-6)
        if row["mode"] == "expected":
            assert row["generated_tokens_per_s"] is None and row["new_tokens"] == 0
        else:
            assert row["generated_tokens_per_s"] > 0 and row["per_video_s"]["lm_decode_s"] > 0
    naive = [r for r in rows if r["variant"] == "naive"]
    assert {r["workload"] for r in naive} == {"demo", "2k"} and all(r["vs_naive"] == 1 for r in naive)
    thinking = [r for r in rows if r["mode"] == "thinking"]
    assert thinking and all(r["new_tokens"] == 64 for r in thinking)
    mixed = {r["order"]: r for r in rows if r["workload"] == "mixed"}
    assert mixed["mixed-planned"]["padding_share"] == 0 < mixed["mixed-arrival"]["padding_share"]
    checks = result["checks"]
    assert checks["vision_rel_error"] < 1e-5 and checks["probs_max_abs_diff"] < 1e-5
    assert checks["step_logits_rel_error"] < 1e-5 and checks["greedy_static_vs_hf_token_agreement"] == 1.0
    decode = result["workloads"]["demo"]
    assert decode["video_decode_s"] > 0 and decode["preprocess_s"] > 0
    assert "| workload |" in stdout and "× naive" in stdout


@pytest.mark.slow
def test_render_prints_the_table(quick):
    _, _, out = quick
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--render", str(out)], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + 14 and "videos/s" in lines[0]
