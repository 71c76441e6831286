"""Shared fixtures: one build folder per test session, the real tiny critic, real synthetic clips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SHARED_VIDEOS = SHARED / "videos" / "videophy2"
MODEL_OUTPUTS = SHARED / "model_outputs"


@pytest.fixture(scope="session", autouse=True)
def session_build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test writes under one temporary build folder (never the repo's build/)."""
    path = tmp_path_factory.mktemp("build")
    os.environ["PLAUSIBILITY_BUILD_DIR"] = str(path)
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ["HF_HUB_OFFLINE"] = "1"
    return path


@pytest.fixture(scope="session")
def tiny_critic(session_build_dir: Path) -> Path:
    from recipe_lib.demo import demo_model_dir, ensure_demo_critic

    return ensure_demo_critic(demo_model_dir())


@pytest.fixture(scope="session")
def synth_clips(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A small set of real rendered mp4 clips covering every scene (and a dataset on disk)."""
    from recipe_lib.data.synthetic import SynthConfig, generate_clips

    out = tmp_path_factory.mktemp("synth")
    return generate_clips(SynthConfig(n=16, out_dir=out, seed=3, style="contrast", frames=16))


@pytest.fixture(scope="session")
def shared_videos() -> list[Path]:
    if not SHARED_VIDEOS.is_dir():
        pytest.skip(f"real VideoPhy-2 clips not present at {SHARED_VIDEOS} (a fresh clone lacks ../shared)")
    return sorted(SHARED_VIDEOS.glob("*.mp4"))


@pytest.fixture(scope="session")
def model_outputs() -> dict[str, str]:
    if not MODEL_OUTPUTS.is_dir():
        pytest.skip(f"real model outputs not present at {MODEL_OUTPUTS} (a fresh clone lacks ../shared)")
    return {p.name: p.read_text() for p in sorted(MODEL_OUTPUTS.glob("*.txt"))}


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
