"""Paths and helpers the tests share (fixtures are in ``conftest.py``)."""

from __future__ import annotations

import os
import subprocess
import sys

from recipe_lib.config import REPO_ROOT as REPO

SHARED = REPO.parent / "shared"
SHARED_VIDEOS = SHARED / "videos" / "videophy2"
MODEL_OUTPUTS = SHARED / "model_outputs"


def run_cli(*args: str, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``plausibility`` in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "recipe_lib.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=REPO,
    )
