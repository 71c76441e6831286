"""The numbered notebooks executed headless by papermill, as `make demo` runs them; assertions on their metrics JSON
and on the figures they produced."""

from __future__ import annotations

import re

import nbformat
import pytest

from notebook_outputs import html_stderr_boxes, stderr_outputs
from recipe_lib.notebooks import list_notebooks, run_notebook


def image_outputs(path) -> int:
    nb = nbformat.read(path, as_version=4)
    return sum(
        1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {})
    )


def test_notebooks_are_committed_clean():
    for path in list_notebooks():
        nb = nbformat.read(path, as_version=4)
        assert nb.metadata["kernelspec"]["name"] == "plausibility-recipes", path.name
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
        assert 'profile = "demo"' in tagged[0].source, path.name
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs committed"
        assert "save_metrics(" in nb.cells[-1].source, f"{path.name}: last cell must save metrics"
        # Figures are returned by recipe_lib.plots; the inline backend must be on for them to render as images.
        assert any("%matplotlib inline" in c.source for c in nb.cells if c.cell_type == "code"), path.name


def test_01_dataset_exploration():
    run = run_notebook("01_dataset_exploration")
    m = run.metrics
    assert m["n_clips"] > 100 and sum(m["label_counts"].values()) == m["n_clips"]
    assert set(m["label_counts"]) >= {"1", "5"} and m["n_example_sheets"] >= 3
    assert m["violation_counts"]["none"] > 0 and len(m["violation_counts"]) >= 8
    assert image_outputs(run.output) >= 3
    assert run.html.exists() and "data:image/png;base64" in run.html.read_text()


def test_02_zero_shot():
    run = run_notebook("02_zero_shot")
    m = run.metrics
    assert m["n"] == m["scored"] > 20 and m["coverage"] == 1.0 and m["skipped"] == 0
    assert 0 <= m["accuracy"] <= 1 and m["majority_accuracy"] >= 0.2
    assert image_outputs(run.output) >= 2
    # Semantic adherence on the demo's matching / mismatching captions, and the joint metric beside it.
    assert m["sa_n"] == m["n"] and m["sa_coverage"] == 1.0 and 0 <= m["sa_accuracy"] <= 1
    assert 0 <= m["joint_rate"] <= 1 and 0 <= m["label_joint_rate"] <= 1
    # A rerun scores nothing new: every result comes from the cache.
    again = run_notebook("02_zero_shot", html=False)
    assert again.metrics["from_cache"] == m["scored"] and again.metrics["scored_this_run"] == 0
    assert again.metrics["accuracy"] == pytest.approx(m["accuracy"])


def test_failing_notebook_reports_the_cell(tmp_path):
    from recipe_lib.errors import RecipeError

    with pytest.raises(RecipeError, match="failed in cell"):
        run_notebook("02_zero_shot", {"eval_data": str(tmp_path / "missing")}, html=False)


@pytest.mark.slow
def test_07_at_scale(newcomer_kernels, capfd):
    """As `make demo` runs it, in a newcomer's kernel (no ipywidgets, no RAY_AUTH_MODE): the same rows as one
    process, and not one line on stderr in the notebook or its page. A line the kernel writes to its stderr reaches
    the cell only if the kernel forwards it while the cell runs, so the kernel's own stderr (this process's, which
    it inherits) must carry no Ray line either: no log line of Ray's core (``[... E ...] core_worker.cc:N: ...``)
    and no Ray Data warning."""
    pytest.importorskip("ray", reason="Ray is not installed (the ray extra)")
    run = run_notebook("07_at_scale", {"profile": "demo"})
    m = run.metrics
    assert m["scored"] == 16 and m["skipped"] == 0 and m["scored_this_run"] + m["from_cache"] == 16
    assert m["same_keys"] and m["same_score"] and m["max_expected_diff"] < 1e-4
    assert stderr_outputs(run.output) == [] and html_stderr_boxes(run.html) == 0
    kernel_err = capfd.readouterr().err
    assert not re.search(r"\] \w+\.cc:\d+: ", kernel_err) and "ray/data" not in kernel_err, kernel_err[-3000:]
