"""A headless notebook run is quiet: papermill reads every parameter without a warning, the kernel runs with encrypted
channels (no plain-TCP warning), and the known import-time messages of dependencies do not reach the notebook, while a
warning of the run itself still does."""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import os
import subprocess
import sys

import nbformat
import papermill
import pytest

from notebook_outputs import html_stderr_boxes, stderr_outputs
from recipe_lib.notebooks import KERNEL_ENV, ensure_kernel, kernel_spec_path, list_notebooks, run_notebook

TRANSPORT_WARNING = "Kernel is running over TCP without encryption"
NOISE = {  # package whose import prints it -> the start of the message the kernel environment silences
    "pynvml": "The pynvml package is deprecated",
    "torchao": "is an Enum subclass and is now natively supported by torch.compile",
}


def _parameters_cell(path) -> str:  # noqa: ANN001
    nb = nbformat.read(path, as_version=4)
    return next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))


def _assigned_names(source: str) -> set[str]:
    return {t.id for node in ast.parse(source).body if isinstance(node, ast.Assign) for t in node.targets}


def _inspect(path, caplog) -> tuple[dict, list[str]]:  # noqa: ANN001
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="papermill"):
        params = papermill.inspect_notebook(str(path))
    return params, [r.getMessage() for r in caplog.records if r.name.startswith("papermill")]


def _probe_notebook(path, parameters: str, *cells: str):  # noqa: ANN001, ANN202
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "plausibility-recipes", "language": "python", "display_name": "Python"}
    nb.cells = [nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(nb, path)
    return path


def test_papermill_reads_every_parameter_without_a_warning(caplog, tmp_path):
    for path in list_notebooks():
        params, warnings = _inspect(path, caplog)
        assert not warnings, f"{path.name}: {warnings}"
        assert set(params) == _assigned_names(_parameters_cell(path)), path.name
    # The check sees the problem it guards against: papermill cannot parse a comment that holds an "=".
    probe = _probe_notebook(tmp_path / "probe.ipynb", "model = None  # None = the profile's critic")
    _, warnings = _inspect(probe, caplog)
    assert warnings and "Unable to parse line 1" in warnings[0]


def test_kernel_spec_declares_encryption_and_the_quiet_environment():
    assert ensure_kernel() == "plausibility-recipes"
    spec = json.loads((kernel_spec_path() / "kernel.json").read_text())
    assert "curve" in spec["metadata"]["supported_encryption"]
    assert {k: spec["env"].get(k) for k in KERNEL_ENV} == KERNEL_ENV
    assert os.path.exists(spec["argv"][0])


@pytest.mark.slow  # two fresh interpreters importing torch and transformers
def test_the_silenced_messages_are_real():
    """Each filtered message is printed by a plain interpreter here, and not with the kernel's environment; when a
    dependency stops printing it, this fails and its filter can go."""
    installed = [package for package in NOISE if importlib.util.find_spec(package) is not None]
    if not installed:
        pytest.skip("neither pynvml nor torchao is installed (they come with the cosmos extra): nothing to silence")
    code = "import torch, transformers.modeling_utils"  # torch imports pynvml; transformers' quantizers import torchao
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_ENV}
    plain, quiet = (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=300)
        for e in (env, {**env, **KERNEL_ENV})
    )
    assert plain.returncode == quiet.returncode == 0, plain.stderr[-2000:] + quiet.stderr[-2000:]
    for package in installed:
        assert NOISE[package] in plain.stderr, package
    assert quiet.stderr.strip() == "", quiet.stderr[-2000:]


def test_a_headless_run_is_clean_but_keeps_the_run_s_own_warnings(tmp_path, capfd, caplog):
    from recipe_lib.docs import export_notebook_html

    probe = _probe_notebook(
        tmp_path / "probe.ipynb",
        'profile = "demo"  # "demo" or "full"; the profile\'s settings',
        "import torch\nimport transformers.modeling_utils\nprint('imported', profile)",
        "import warnings\nwarnings.warn('a warning of the run itself', UserWarning)",
    )
    with caplog.at_level(logging.WARNING, logger="papermill"):
        run = run_notebook(str(probe), {"profile": "full"}, html=False, out_dir=tmp_path / "out")
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("papermill")]
    err = capfd.readouterr().err
    assert TRANSPORT_WARNING not in err, err[-2000:]
    assert not any(message in err for message in NOISE.values()), err[-2000:]
    nb = nbformat.read(run.output, as_version=4)
    assert nb.cells[2].outputs[0]["text"] == "imported full\n"
    found = stderr_outputs(run.output)
    assert len(found) == 1 and "a warning of the run itself" in found[0], found
    page = export_notebook_html(run.output, tmp_path / "page")  # not a docs/ folder: the autouse check skips it
    assert html_stderr_boxes(page) == 1


def test_progress_bars_follow_tqdm_disable_and_draw_text_outside_a_kernel(monkeypatch):
    """The project's bars (recipe_lib.progress): off when TQDM_DISABLE is set even if the caller asks for progress
    (tqdm itself lets an explicit argument win over its environment), tqdm's plain text bar outside a kernel."""
    import io

    from tqdm.std import tqdm as text_tqdm

    from recipe_lib.progress import bar_class, progress_bar

    assert bar_class() is text_tqdm
    monkeypatch.setenv("TQDM_DISABLE", "1")
    out = io.StringIO()
    with progress_bar(total=3, desc="scoring", file=out, enabled=True) as bar:
        bar.update(3)
    assert bar.disable and out.getvalue() == ""
    monkeypatch.delenv("TQDM_DISABLE")
    with progress_bar(total=3, desc="scoring", file=out) as bar:
        bar.update(3)
    assert "scoring" in out.getvalue() and "3/3" in out.getvalue()
    with progress_bar(total=3, file=io.StringIO(), enabled=False) as bar:
        assert bar.disable
