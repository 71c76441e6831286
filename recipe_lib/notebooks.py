"""Run the recipe's notebooks headless with papermill, record their metrics, export them as HTML.

Executed notebooks land in ``build/notebooks/``, HTML exports in ``build/docs/``, and each notebook's last cell writes
``build/<notebook>/metrics.json`` through :func:`save_metrics`. The kernel is the project's own
(``plausibility-recipes``, registered into the virtualenv on first use), named explicitly so a fresh machine needs no
Jupyter set-up; the working folder is the repository root (the current folder for an installed package).

Clean output: the kernel's ZeroMQ channels are CurveZMQ-encrypted (the kernel spec declares support; without it
ipykernel warns that it runs over TCP in plain text), the kernel spec's environment (:data:`KERNEL_ENV`) silences
three known import-time messages of dependencies, and headless runs draw no progress bars (:data:`HEADLESS_ENV`,
:mod:`recipe_lib.progress`), so neither the log nor an executed notebook carries them — with or without the ``lab``
extra. Nothing else is filtered: any other warning or error still reaches the notebook's output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import keyword
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recipe_lib.config import build_dir
from recipe_lib.errors import ConfigError, RecipeError
from recipe_lib.resources import NOTEBOOKS_DIR, project_dir

KERNEL_NAME = "plausibility-recipes"
KERNEL_DISPLAY_NAME = "Python (plausibility-recipes)"

# Written into the kernel spec, so papermill runs, `make lab` and any Jupyter server get them. Each silences one known
# message a dependency prints when it is imported, by its exact start; none says anything about the user's run:
#   pynvml (pulled in by cosmos-rl) warns on import that it is deprecated in favour of nvidia-ml-py, which
#     torch.cuda already uses;
#   tqdm.auto, imported by datasets, huggingface_hub and transformers, picks its widget bar inside any kernel and, in
#     a venv without ipywidgets (`make venv` installs no `lab` extra), warns "IProgress not found" and falls back to
#     the text bar: the kernel cannot draw a widget either way, so the advice to install ipywidgets is noise (the
#     filter names the class Warning: a -W filter is read before site-packages can be imported, so tqdm's own
#     TqdmWarning cannot be named; the message's start makes it exact);
#   torchao (pulled in by cosmos-rl; transformers' torchao quantizer imports it whenever it is installed) registers
#     Enum classes that torch 2.14's pytree warns about through the torch.utils._pytree logger (errors still show).
KERNEL_ENV = {
    "PYTHONWARNINGS": ",".join(
        ("ignore:The pynvml package is deprecated:FutureWarning", "ignore:IProgress not found:Warning")
    ),
    "TORCH_LOGS": "-torch.utils._pytree",
}

# Headless runs draw no progress bars at all: TQDM_DISABLE switches off tqdm's bars that their caller does not
# configure and ours (recipe_lib.progress), HF_DATASETS_DISABLE_PROGRESS_BARS the bars of datasets' map/filter/save;
# a bar in a headless kernel only reaches the page as stderr text (or as a widget that exports as junk). Keep inline
# figures (an inherited MPLBACKEND=Agg would silently drop every figure from the executed notebook).
HEADLESS_ENV = {
    "TQDM_DISABLE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


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


def kernel_spec_path() -> Path | None:
    """The folder of the registered ``plausibility-recipes`` kernel spec (None when there is none)."""
    from jupyter_client.kernelspec import KernelSpecManager

    found = KernelSpecManager().find_kernel_specs().get(KERNEL_NAME)
    return Path(found) if found else None


def ensure_kernel() -> str:
    """Register the project's kernel (this interpreter, with :data:`KERNEL_ENV`) into the virtualenv unless a spec
    with a working interpreter and that environment is there already."""
    found = kernel_spec_path()
    if found is not None:
        spec = json.loads((found / "kernel.json").read_text())
        argv = spec.get("argv") or [""]
        if Path(argv[0]).exists() and all(spec.get("env", {}).get(k) == v for k, v in KERNEL_ENV.items()):
            return KERNEL_NAME
    from ipykernel.kernelspec import install

    install(kernel_name=KERNEL_NAME, display_name=KERNEL_DISPLAY_NAME, prefix=sys.prefix, env=dict(KERNEL_ENV))
    return KERNEL_NAME


def kernel_config() -> Any:
    """traitlets configuration for the kernel manager of a headless run: CurveZMQ transport encryption when the kernel
    spec declares support (``auto``), on jupyter_client versions that offer it."""
    from traitlets.config import Config

    config = Config()
    if _offers_transport_encryption():
        config.KernelManager.transport_encryption = "auto"
    return config


def _offers_transport_encryption() -> bool:
    from jupyter_client import KernelManager

    return KernelManager.class_traits().get("transport_encryption") is not None


def jupyter_command(
    app: str = "jupyterlab", port: int | None = None, token: str | None = None, browser: bool = True
) -> list[str]:
    """The Jupyter server that ``make lab`` starts (``app="jupyterlab"``; the tests start ``"jupyter_server"``, what
    JupyterLab runs on, with the same settings): on 127.0.0.1 only, rooted at the notebooks folder, kernels on
    encrypted channels (:func:`kernel_config`), allowed to run as root (a container). The project's kernel is
    registered first."""
    ensure_kernel()
    command = [sys.executable, "-m", app, "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={NOTEBOOKS_DIR}"]
    if _offers_transport_encryption():
        command.append("--KernelManager.transport_encryption=auto")
    if port is not None:
        command += [f"--ServerApp.port={port}", "--ServerApp.port_retries=0"]
    if token is not None:
        command.append(f"--IdentityProvider.token={token}")
    if not browser:
        command.append("--ServerApp.open_browser=False")
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers run as root; Jupyter refuses to unless told
        command.append("--ServerApp.allow_root=True")
    return command


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


def notebook_parameters(name: str) -> list[str]:
    """The names a notebook's ``parameters`` cell assigns (what ``-p NAME=VALUE`` may set), in cell order."""
    import papermill as pm

    return list(pm.inspect_notebook(str(find_notebook(name))))


def check_parameters(name: str, parameters: dict[str, Any]) -> None:
    """Every parameter name must be one the notebook's ``parameters`` cell assigns: papermill writes names into code
    as they are (``-p "__import__('os').system(...);x=2"`` would run), and an unknown name would change nothing.
    One error naming the notebook's parameters, with the closest name, before any kernel starts."""
    known = notebook_parameters(name)
    for key in parameters:
        if key.isidentifier() and not keyword.iskeyword(key) and key in known:
            continue
        shown = key if len(key) <= 60 else key[:57] + "..."
        close = difflib.get_close_matches(key, known, n=1)
        if key.isidentifier() and not keyword.iskeyword(key):
            problem = f"notebook {find_notebook(name).stem} has no parameter {shown!r}"
        else:
            problem = f"parameter name {shown!r} is not a name (letters, digits and underscores)"
        hint = (f"did you mean {close[0]!r}? " if close else "") + f"its parameters: {', '.join(known) or 'none'}"
        raise ConfigError(problem, hint=hint)


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
    check_parameters(name, parameters or {})
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
                cwd=str(project_dir()),
                execution_timeout=timeout,
                start_timeout=120,
                progress_bar=False,
                log_output=False,
                config=kernel_config(),
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
