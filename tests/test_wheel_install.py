"""The package works when installed as a package: a wheel built from the repository's files carries the prompts,
configs and notebooks, and `plausibility score` from a clean virtualenv, run outside the repository, scores a real clip
with the default prompt and the tiny critic."""

from __future__ import annotations

import csv
import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from support import REPO

pytestmark = pytest.mark.slow  # builds a wheel, creates a virtualenv, imports torch in three fresh interpreters

PROBE = """
import json, recipe_lib
from recipe_lib import resources
from recipe_lib.config import build_dir
from recipe_lib.notebooks import list_notebooks
print(json.dumps({"file": recipe_lib.__file__, "checkout": resources.SOURCE_CHECKOUT,
                  "prompts": sorted(p.name for p in resources.PROMPTS_DIR.glob("*.yaml")),
                  "configs": [p.relative_to(resources.CONFIGS_DIR).as_posix()
                              for p in resources.CONFIGS_DIR.rglob("*.toml")],
                  "notebooks": [p.name for p in list_notebooks()], "build": str(build_dir())}))
"""


def _run(args: list, cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args[:3]}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def _source_tree(dest: Path) -> Path:
    """The repository's files as a clean clone would have them (tracked plus new, not ignored), copied to ``dest``."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the files of a clean clone cannot be listed")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = _source_tree(tmp_path_factory.mktemp("src"))
    dist = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, src]
    _run(command, cwd=src, env=dict(os.environ))
    (built,) = dist.glob("plausibility_recipes-*.whl")
    return built


def test_the_wheel_carries_prompts_configs_and_notebooks(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, pattern in (("prompts", "*.yaml"), ("configs", "*/*.toml"), ("notebooks", "[0-9][0-9]_*.ipynb")):
        files = (REPO / folder).glob(pattern)
        expected = {f"recipe_lib/_data/{folder}/{p.relative_to(REPO / folder).as_posix()}" for p in files}
        assert expected and expected <= names, folder
    assert "recipe_lib/cli.py" in names and not any(n.startswith(("prompts/", "tests/")) for n in names)


def test_installed_package_scores_a_clip_with_its_default_prompt(wheel, synth_clips, tmp_path):
    venv, work = tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path, env=dict(os.environ))
    py = venv / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    purelib = Path(_run([py, "-c", where], tmp_path, {}).stdout.strip())
    # The dependencies come from this interpreter's site-packages, appended after the new venv's own (which holds the
    # wheel): a plain path, so no .pth file there (an editable install's finder) is processed.
    (purelib / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index", wheel], tmp_path, {})

    drop = ("PYTHONPATH", "PLAUSIBILITY_BUILD_DIR", "VIRTUAL_ENV", "PYTHONHOME")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    probe = json.loads(_run([py, "-c", PROBE], work, env).stdout)
    assert Path(probe["file"]).resolve().is_relative_to(purelib.resolve()), probe["file"]
    assert probe["checkout"] is False and "video_reward.yaml" in probe["prompts"]
    assert {"demo/sft.toml", "demo/grpo.toml", "full/sft.toml"} <= set(probe["configs"])
    assert len(probe["notebooks"]) == len(list((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")))
    assert Path(probe["build"]) == (work / "build").resolve(), "an installed package builds under ./build"

    plausibility = venv / "bin" / "plausibility"
    _run([plausibility, "tiny-model", "--out", tmp_path / "critic"], work, env)
    clip = sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[0]
    out = tmp_path / "scores"
    score = [plausibility, "score", clip, "--out", out, "--model", tmp_path / "critic", "--device", "cpu"]
    _run([*score, "--threshold", "4"], work, env)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["prompt"] == "video_reward" and summary["scored"] == 1 and summary["skipped"] == 0
    (row,) = list(csv.DictReader((out / "predictions.csv").open()))
    assert 1 <= float(row["expected_score"]) <= 5
