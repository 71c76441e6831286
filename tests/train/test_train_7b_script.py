"""benchmarks/train_7b.sh --tiny: every phase of the one-GPU 7B script, with the demo critic on a CPU, so the GPU run
works the first time (the same commands, the same summaries)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from support import REPO


@pytest.mark.slow  # several minutes: nine fresh interpreters, each loading the critic
def test_train_7b_script_rehearses_every_phase(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"), "PY": sys.executable}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        ["bash", "benchmarks/train_7b.sh", "--tiny"], cwd=REPO, env=env, capture_output=True, text=True, timeout=1500
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "train7b.json").read_text())
    phases = {p["phase"]: p for p in summary["phases"]}
    assert {"env", "data", "sft-lora-probe", "sft-lora", "resume", "estimate", "sft-full", "grpo-lora", "score",
            "sweep", "total"} <= set(phases)  # fmt: skip
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert {line["phase"] for line in lines} == set(phases), "one JSON line a phase on stdout"
    for name in ("sft-lora-probe", "sft-lora", "sft-full", "grpo-lora", "score", "sweep"):
        assert phases[name]["rc"] == 0, phases[name]
    sft = phases["sft-lora"]
    assert sft["steps"] > phases["sft-lora-probe"]["steps"] and len(sft["loss"]) == sft["steps"]
    assert "adapter_model.safetensors" in sft["final_files"] and "model.safetensors" not in sft["final_files"]
    assert sft["eval"] and "accuracy" in sft["eval"][-1]
    assert phases["estimate"]["full_runs"] and phases["sft-full"]["steps"] == 2
    assert len(phases["grpo-lora"]["reward_mean"]) == 1
    assert phases["score"]["scored"] == phases["data"]["held_out"]
    assert [p["checkpoint"] for p in phases["sweep"]["points"]] == ["start", "final"]
    assert (tmp_path / "out" / "sft-lora" / "history.jsonl").is_file()
    assert all(p.stat().st_size < 2 << 20 for p in (tmp_path / "out").rglob("*") if p.is_file()), "small files only"
