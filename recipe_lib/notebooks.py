"""Run the recipe's notebooks headless with papermill, record their metrics, export them as HTML.

Executed notebooks land in ``build/notebooks/``, HTML exports in ``build/docs/``, and each notebook's last cell writes
``build/<notebook>/metrics.json`` through :func:`save_metrics`. The kernel is the project's own
(``plausibility-recipes``, registered into the virtualenv on first use), named explicitly so a fresh machine needs no
Jupyter set-up; the working folder is the repository root.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recipe_lib.config import REPO_ROOT, build_dir
from recipe_lib.errors import RecipeError

KERNEL_NAME = "plausibility-recipes"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"

# Headless runs: no widget progress bars (they export as junk), no dataset bars; keep inline figures (an inherited
# MPLBACKEND=Agg would silently drop every figure from the executed notebook).
HEADLESS_ENV = {"TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}


@dataclasses.dataclass
class NotebookRun:
    name: str
    output: Path
    html: Path | None
    metrics: dict[str, Any] | None
    seconds: float


def list_notebooks() -> list[Path]:
    return sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def find_notebook(name: str) -> Path:
    """``02``, ``02_zero_shot``, ``02_zero_shot.ipynb`` or a path."""
    path = Path(name)
    if path.suffix == ".ipynb" and path.exists():
        return path
    for nb in list_notebooks():
        if nb.stem == name or nb.name == name or nb.stem.split("_", 1)[0] == name:
            return nb
    known = ", ".join(nb.stem for nb in list_notebooks())
    raise RecipeError(f"no notebook named '{name}'", hint=f"notebooks: {known}")


def ensure_kernel() -> str:
    """Register the project's kernel (this interpreter) into the virtualenv if it is not there yet."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    if KERNEL_NAME in specs:
        argv = json.loads((Path(specs[KERNEL_NAME]) / "kernel.json").read_text()).get("argv", [""])
        if Path(argv[0]).exists():
            return KERNEL_NAME
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ipykernel",
            "install",
            "--sys-prefix",
            "--name",
            KERNEL_NAME,
            "--display-name",
            "Python (plausibility-recipes)",
        ],
        check=True,
        capture_output=True,
    )
    return KERNEL_NAME


def metrics_path(notebook: str) -> Path:
    return build_dir() / notebook / "metrics.json"


def save_metrics(notebook: str, metrics: dict[str, Any]) -> Path:
    """Write a notebook's metrics JSON atomically (the last cell of every notebook calls this)."""
    path = metrics_path(notebook)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metrics, indent=2, default=_jsonable))
    tmp.replace(path)
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return str(value)


@contextlib.contextmanager
def _headless_env() -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(HEADLESS_ENV)
    os.environ.pop("MPLBACKEND", None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def export_html(executed: Path, out_dir: Path | None = None) -> Path:
    """Export an executed notebook to an offline HTML page (images inlined, no external scripts) in ``build/docs``."""
    from recipe_lib.docs import export_notebook_html

    return export_notebook_html(executed, out_dir or build_dir() / "docs")


def run_notebook(
    name: str,
    parameters: dict[str, Any] | None = None,
    timeout: int = 1800,
    html: bool = True,
    out_dir: Path | None = None,
) -> NotebookRun:
    """Execute one notebook with papermill (parameters injected after its ``parameters`` cell)."""
    import papermill as pm

    source = find_notebook(name)
    out_dir = out_dir or build_dir() / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / source.name
    kernel = ensure_kernel()
    metrics_file = metrics_path(source.stem)
    metrics_file.unlink(missing_ok=True)
    start = time.perf_counter()
    with _headless_env():
        try:
            pm.execute_notebook(
                str(source),
                str(output),
                parameters=parameters or {},
                kernel_name=kernel,
                cwd=str(REPO_ROOT),
                execution_timeout=timeout,
                start_timeout=120,
                progress_bar=False,
                log_output=False,
            )
        except pm.PapermillExecutionError as exc:
            raise RecipeError(
                f"notebook {source.name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}",
                hint=f"open {output} to see the failing cell",
            ) from exc
    seconds = time.perf_counter() - start
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else None
    page = export_html(output) if html else None
    return NotebookRun(source.stem, output, page, metrics, seconds)


def write_index() -> Path:
    """Refresh the docs site: every executed notebook as an offline page, reports, and the index page."""
    from recipe_lib.docs import build_docs

    return build_docs().index
