"""``plausibility notebooks run 02`` killed while its kernel scores clips, then run again: the same metrics as an
uninterrupted run, every clip scored once, no metrics file from the killed run."""

from __future__ import annotations

import json

import pytest
from gauntlet import kill_tree, start_cli, wait_until

from recipe_lib.inference.store import read_store
from support import run_cli, store_count


@pytest.fixture(scope="module")
def notebook_build(tiny_critic, tmp_path_factory):  # noqa: ANN201
    """A build folder of its own whose data/ and models/ are the session's demo clips and critic (read only)."""
    from recipe_lib.config import build_dir
    from recipe_lib.demo import ensure_demo_data

    demo = ensure_demo_data()
    root = tmp_path_factory.mktemp("notebook_build")
    (root / "data").symlink_to(build_dir() / "data", target_is_directory=True)
    (root / "models").symlink_to(build_dir() / "models", target_is_directory=True)
    return root, demo.n_eval


@pytest.mark.slow
def test_notebook_killed_mid_scoring_reruns_to_the_same_metrics(notebook_build, tmp_path):
    from recipe_lib.stages.zero_shot import ZeroShotConfig, run_zero_shot

    root, n = notebook_build
    env = {"PLAUSIBILITY_BUILD_DIR": str(root)}
    results = root / "02_zero_shot" / "scores" / "results.sqlite"
    metrics = root / "02_zero_shot" / "metrics.json"

    # pc only (the notebook's demo default also scores sa): one result per clip to count
    proc = start_cli("notebooks", "run", "02", "--no-html", "-p", "tasks=pc", env=env)
    wait_until(proc, lambda: store_count(results) >= 8, timeout=300, poll=0.005)
    kernels = kill_tree(proc)  # the CLI and its kernel, as an OOM kill or a lost machine would
    assert kernels, "the notebook ran in a kernel process started by the command"
    landed = read_store(results)
    assert 8 <= len(landed) < n, "killed while the kernel was scoring"
    assert not metrics.exists(), "a killed run leaves no metrics to be mistaken for a finished one"

    done = run_cli("notebooks", "run", "02", "--no-html", "-p", "tasks=pc", env=env)
    assert done.returncode == 0, done.stderr
    m = json.loads(metrics.read_text())
    assert (m["scored"], m["from_cache"], m["scored_this_run"]) == (n, len(landed), n - len(landed))
    rows = read_store(results)
    assert len({r["key"] for r in rows}) == len(rows) == n, "no clip is scored twice"
    by_key = {r["key"]: r for r in rows}
    assert all(by_key[r["key"]] == r for r in landed), "rows from before the kill are kept as they were"

    reference = run_zero_shot(ZeroShotConfig(out_dir=tmp_path / "uninterrupted"), progress=False)
    for key, value in reference.metrics.to_dict().items():
        assert m[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
    for row in reference.scores.rows:
        assert by_key[row["key"]]["score"] == row["score"]
        assert by_key[row["key"]]["expected_score"] == pytest.approx(row["expected_score"], abs=1e-4)
