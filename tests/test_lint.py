"""The code, the tests, the benchmarks and the notebooks' code cells pass ruff (the project's style rules)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from support import REPO

PATHS = ["recipe_lib", "tests", "benchmarks", "notebooks"]


def _ruff() -> list[str]:
    exe = shutil.which("ruff", path=str(REPO / ".venv" / "bin")) or shutil.which("ruff")
    if exe is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    return [exe]


def test_ruff_check_is_clean():
    proc = subprocess.run([*_ruff(), "check", *PATHS], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_ruff_format_is_clean():
    proc = subprocess.run([*_ruff(), "format", "--check", *PATHS[:3]], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
