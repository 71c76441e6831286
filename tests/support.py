"""Paths and helpers the tests share (fixtures are in ``conftest.py``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from recipe_lib.config import REPO_ROOT as REPO

SHARED = REPO.parent / "shared"
SHARED_VIDEOS = SHARED / "videos" / "videophy2"
MODEL_OUTPUTS = SHARED / "model_outputs"


def run_cli(*args: str, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``plausibility ARGS`` in a new process, as a user would; the result of :func:`subprocess.run`.

    ``env``: variables set for this run on top of this process's (a value of None removes one). The process is forked
    from a server that has the heavy libraries imported (:mod:`cli_process`), unless ``env`` changes a variable
    libraries read at import time: then it is a new ``python -m recipe_lib.cli``."""
    from cli_process import needs_new_interpreter, run_forked

    full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    if not needs_new_interpreter(full_env):
        return run_forked(list(args), full_env, REPO, timeout)
    return subprocess.run(
        [sys.executable, "-m", "recipe_lib.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=REPO,
    )


def store_count(path) -> int:  # noqa: ANN001
    """Rows in a result store (``results.sqlite`` or its folder) as another process sees them, without the run lock;
    0 while it does not exist yet."""
    import sqlite3
    from pathlib import Path

    path = Path(path)
    path = path / "results.sqlite" if path.is_dir() else path
    if not path.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            return db.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:  # created but its table not yet committed
        return 0


def demo_score_config(tiny_critic: Path | str, inputs: list, out: Path, **kw: object):  # noqa: ANN201
    """A scoring config for the tiny critic on CPU with the demo profile's video and sampling settings."""
    from recipe_lib.inference.score_config import ScoreConfig
    from recipe_lib.profiles import get_profile

    demo = get_profile("demo")
    return ScoreConfig(
        inputs=[str(i) for i in inputs],
        out_dir=out,
        model=str(tiny_critic),
        video=demo.video,
        sampling=demo.sampling,
        device="cpu",
        dtype="float32",
        batch_size=4,
        **kw,
    )
