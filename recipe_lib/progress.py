"""Progress bars that suit where the code runs: a text bar on a terminal, a widget bar in JupyterLab when ipywidgets
is installed, and none in a headless run.

``tqdm.auto`` is not used here: inside any Jupyter kernel it picks the widget bar, and where ipywidgets is missing (a
``make venv`` without the ``lab`` extra) it warns ``IProgress not found`` and writes text bars to stderr — both end up
as red boxes in executed notebooks and their exported pages. A caller's ``progress=True`` also overrides tqdm's own
``TQDM_DISABLE`` switch (tqdm reads its environment only for arguments the caller leaves out), so headless runs,
which set ``TQDM_DISABLE=1`` (:data:`recipe_lib.notebooks.HEADLESS_ENV`), still drew bars; :func:`progress_enabled`
honours it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterable
from typing import Any

_OFF = ("1", "true", "yes")


def progress_enabled(progress: bool) -> bool:
    """Whether to draw progress bars: asked for, and not switched off with ``TQDM_DISABLE`` (headless notebook runs)."""
    return progress and os.environ.get("TQDM_DISABLE", "").strip().lower() not in _OFF


def in_kernel() -> bool:
    """Whether this process is a Jupyter kernel (an IPython kernel app is running)."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if get_ipython else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def bar_class() -> type:
    """tqdm's widget bar in a kernel that can draw it (ipywidgets installed), its plain text bar everywhere else."""
    if in_kernel() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm as notebook_tqdm

        return notebook_tqdm
    from tqdm.std import tqdm as std_tqdm

    return std_tqdm


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar (``total``, ``desc``, ``unit`` ... as tqdm takes them), drawn only when :func:`progress_enabled`."""
    return bar_class()(iterable, disable=not progress_enabled(enabled), **kwargs)
