"""The rules of benchmarks/bench_gpu.py that turn measurements into statements (no model needed)."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_gpu  # noqa: E402

REFERENCE = {"max_abs_dprob": 0.03, "argmax_agreement": 1.0, "max_abs_dexpected": 0.048}


def test_fp8_recommended_only_when_it_agrees_at_least_as_well_as_the_backends():
    good = {"max_abs_dprob": 0.02, "argmax_agreement": 1.0, "max_abs_dexpected": 0.048}
    assert bench_gpu.fp8_rule(good, REFERENCE)["fp8_recommended"] is True
    for key, value in (("max_abs_dprob", 0.031), ("argmax_agreement", 0.94), ("max_abs_dexpected", 0.05)):
        worse = {**good, key: value}
        assert bench_gpu.fp8_rule(worse, REFERENCE)["fp8_recommended"] is False, key
    missing = bench_gpu.fp8_rule(good, None)
    assert missing["fp8_recommended"] is None and "missing" in missing["why"]
    assert "bf16 vLLM" in missing["rule"]


def test_targets_read_the_best_row_of_each_kind_on_the_named_card():
    rows = [
        {"precision": "bf16", "workload": "2k", "mode": "expected", "videos_per_s": 11.0},
        {"precision": "bf16", "workload": "2k", "mode": "expected", "videos_per_s": 12.5},
        {"precision": "fp8", "workload": "7.8k", "mode": "expected", "videos_per_s": 3.2},
        {"precision": "bf16", "workload": "2k", "mode": "thinking", "videos_per_s": 4.0},
        {"backend": "vllm-plain", "workload": "2k", "mode": "expected", "videos_per_s": 50.0},
    ]
    result = {
        "rows": rows,
        "environment": {"device_name": "NVIDIA H100 80GB HBM3"},
        "plan": {"short": "2k"},
        "vision_tower": {
            "bf16/stock": {"ms_per_clip": 170.0},
            "bf16/fused": {"ms_per_clip": 19.0},
            "x": {"error": "e"},
        },
    }
    by_name = {t["target"]: t for t in bench_gpu.targets(result)}
    assert by_name["expected@2k bf16"]["measured"] == 12.5 and by_name["expected@2k bf16"]["met"] is True
    assert by_name["expected@2k fp8"]["measured"] is None and by_name["expected@2k fp8"]["met"] is None
    assert by_name["expected@7.6k"]["measured"] == 3.2 and by_name["expected@7.6k"]["met"] is True
    assert by_name["thinking-512@2k (H100)"]["met"] is False and by_name["thinking-512@2k (H200)"]["measured"] is None
    assert by_name["vision tower ms per 2k clip"]["measured"] == 19.0 and by_name["vision tower ms per 2k clip"]["met"]
