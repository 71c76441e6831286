"""Shared fixtures: one build folder per test session, the real tiny critic, real synthetic clips."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest


def _threads_per_worker() -> int | None:
    """Under pytest-xdist, the cores of the machine shared among its processes (1 each on 2 cores with ``-n 2``)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    return max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None


# Torch's CPU kernels run on one thread per core by default. With two test processes on 2 cores (and the notebook
# kernels, training data loaders and command-line runs they start) that is twice as many busy threads as cores, and a
# training step of the demo critic took 1-10 s instead of 0.2-0.35 s (notebook 03: 616 s, 244 s on one thread beside
# similar load; measured 2026-12-07). Each test process and everything it starts gets its share of the cores
# instead. Set here, before torch is imported in this process and before the warm command server
# (tests/cli_process.py) and any kernel starts, so they all inherit it. A run not split across processes keeps
# torch's default.
_THREADS = _threads_per_worker()
if _THREADS is not None:
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, str(_THREADS))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from notebook_outputs import unclean_since  # noqa: E402
from support import MODEL_OUTPUTS, SHARED_VIDEOS  # noqa: E402

# Tests marked slow here rather than in their modules, one rule a line, so `make test-fast` (pytest -m "not slow")
# stays within a few minutes on 2 CPU cores. They still run in `make test` and CI. A prefix is a folder, a module or
# one test's node id.
SLOW = {
    "tests/reliability/": "each runs the real plausibility command in fresh interpreters, end to end",
    "tests/inference/test_ray_engine.py": "starts real multi-node Ray clusters on 127.0.0.1",
    "tests/inference/test_scoring.py::test_kill_midway_then_resume": "kills a scoring run and resumes it",
    "tests/train/test_sft.py::test_sigkill_then_rerun_resumes_from_last_checkpoint": "kills a training run",
    "tests/test_notebooks.py::test_0": "executes notebooks in a kernel",
    "tests/test_notebooks.py::test_failing_notebook_reports_the_cell": "executes a notebook in a kernel",
    "tests/test_docs_browser.py": "scores clips and opens the pages in headless Chromium",
    "tests/test_clean_output.py::test_a_headless_run": "executes a notebook in a kernel",
    "tests/train/test_grpo.py::test_grpo_run": "its fixture trains a critic to answer (SFT, minutes on a CPU)",
    "tests/train/test_grpo.py::test_grpo_needs_labels": "the same trained fixture",
    "tests/train/test_sft.py::test_answer_format_is_learned": "an SFT run until the format is learned",
    "tests/train/test_sweep.py::test_sweep_cli": "scores every checkpoint of a run through the real command, twice",
    "tests/test_filtering.py::test_rank_command": "the real command end to end in a fresh interpreter",
    "tests/test_filtering.py::test_score_command": "the real command end to end in a fresh interpreter",
    "tests/test_evaluation.py::test_evaluate_command": "the real command end to end in a fresh interpreter",
    "tests/inference/test_endpoint.py::test_cli_errors": "the real command end to end, against a dead endpoint",
}


# The longest end-to-end runs, left out of `make test` (the CI gate, under 15 minutes on 2 cores) and run by
# `make test-all`. Each repeats at full length what a shorter test of the gate covers: Ray scoring runs once on a
# real two-node cluster in the gate, kill-and-resume in every other engine and stage. (The demo notebooks 03/04 run
# in the gate at full length: test_sweep.py.)
LONG = {
    "tests/inference/test_ray_engine.py::test_worker_killed": "a Ray run with its actors killed, then a local run",
    "tests/inference/test_ray_engine.py::test_driver_killed": "a Ray run killed, rerun, then a local run",
    "tests/train/test_sft.py::test_penetration_is_learned": "an SFT run until one violation is learned",
    "tests/reliability/test_gauntlet_notebooks.py": "a notebook killed mid-scoring, then run twice more",
    "tests/test_bench.py": "the scoring benchmark, quick mode",
    "tests/data/test_custom.py::test_notebook_05": "notebook 05 trains on the demo sheet (the workflow's steps are "
    "tested one by one in the gate)",
    "tests/train/test_grpo.py::test_grpo_run": "its fixture trains a critic to answer first (SFT, minutes); notebook "
    "04 runs GRPO in the gate",
    "tests/train/test_grpo.py::test_grpo_needs_labels": "the same trained fixture",
    "tests/test_docs_browser.py::test_docs_site_after_notebook_06": "executes notebook 06 again, then a browser",
    "tests/test_gpu_bundle.py::test_real_bundle_covers_the_entry_points": "downloads ~600 MB of wheels from PyPI "
    "and packs the GPU bundle (reuses .gpu/wheels and .gpu/cache where make gpu-bundle made them)",
    "tests/train/test_train_7b_script.py": "benchmarks/train_7b.sh rehearsed with the demo critic on a CPU (about 7 "
    "min; the gate tests the adapter checkpoints, merging and the disk and memory checks in test_lora_checkpoints.py)",
    "tests/reliability/test_gauntlet_round3.py::test_a_million_row_table": "a 1 M-row table scored and rerun (the "
    "gate scores 50 k rows; benchmarks/bench_table_scale.py measures 10 M)",
    "tests/inference/test_table_scale.py": "150 002 rows above the in-memory limit, streamed, reported and rerun "
    "(about 4 min; the gate streams 50 k rows in test_gauntlet_round3.py)",
    "tests/reliability/test_gauntlet_score.py::test_kill_before_first_batch": "three kills and resumes of one run "
    "(the gate kills and resumes scoring in tests/inference/test_scoring.py)",
}


# Tests that start Ray clusters run after the others, one at a time (`-m cluster` in the Makefile): a Ray node's
# agents must register within a timeout, which two busy test processes on 2 cores can make them miss. They are the
# tests that use a fixture of CLUSTER_FIXTURES (the cluster tests/inference/test_ray_engine.py starts once) and those
# named here; the other tests of test_ray_engine.py (no cluster, no Ray) run with the rest.
CLUSTER = ("tests/test_notebooks.py::test_07_at_scale",)
CLUSTER_FIXTURES = {"ray_cluster"}


# Under pytest-xdist (`--dist loadfile --no-loadscope-reorder` in the Makefile) each process takes the next whole file
# as it runs out of work, in collection order. The files that take longest go first, longest first, the others after
# them in their usual order, so no long file starts near the end while the other process has nothing left: with
# pytest-xdist's own order (files with the most tests first) test_sweep.py started after 6 minutes and ran alone for
# its last 6. Seconds: the first phase of `make test` on 2 cores beside other jobs (load 4), 2026-12-07.
HEAVY_FIRST = (
    "tests/train/test_sweep.py",  # 435: notebooks 03 and 04 at full length (04 starts from 03's checkpoint)
    "tests/reliability/test_gauntlet_round3.py",  # 109
    "tests/reliability/test_gauntlet_hostile.py",  # 88
    "tests/reliability/test_gauntlet_score.py",  # 78
    "tests/test_docs_site.py",  # 71
    "tests/test_notebooks.py",  # 51
    "tests/test_evaluation.py",  # 49
    "tests/test_clean_output.py",  # 43
    "tests/test_docs_browser.py",  # 40
    "tests/inference/test_scoring.py",  # 36
    "tests/train/test_cosmos.py",  # 33
    "tests/test_wheel_install.py",  # 25
    "tests/reliability/test_gauntlet_videophy2.py",  # 25
)


def _heavy_first(items: list[pytest.Item]) -> list[pytest.Item]:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return HEAVY_FIRST.index(path) if path in HEAVY_FIRST else len(HEAVY_FIRST)

    return sorted(items, key=rank)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items[:] = _heavy_first(items)
    for item in items:
        if item.nodeid.startswith(CLUSTER) or CLUSTER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)
        if item.nodeid.startswith(tuple(LONG)):
            item.add_marker(pytest.mark.long)
            item.add_marker(pytest.mark.slow)
        elif item.nodeid.startswith(tuple(SLOW)):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def session_build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test writes under one temporary build folder (never the repo's build/)."""
    path = tmp_path_factory.mktemp("build")
    os.environ["PLAUSIBILITY_BUILD_DIR"] = str(path)
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ["HF_HUB_OFFLINE"] = "1"
    # Ray started by the tests runs on loopback without Ray's token auth unless a test says otherwise (the cluster of
    # tests/inference/test_ray_engine.py: token auth, in a HOME of its own); set explicitly, because Ray turns auth on
    # by itself once a token exists in ~/.ray (a plain ray.init() writes one), and a half-enabled cluster refuses the
    # driver.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    return path


@pytest.fixture(autouse=True)
def executed_notebooks_are_clean(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """Every notebook a test executes (in process or through the CLI, into any build folder of the session) and every
    page exported from one carries no stderr output: no library warning, no log line above the real output."""
    since = time.time()
    yield
    problems = unclean_since(tmp_path_factory.getbasetemp(), since)
    assert not problems, "stderr in executed notebooks:\n" + "\n".join(problems)


@pytest.fixture
def newcomer_kernels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels started from this test run as in a `make venv` without the `lab` extra: a package named ipywidgets
    that refuses to import comes first on their path. The session's own progress-bar switches and its
    ``RAY_AUTH_MODE`` are removed, so the kernel sees only what run_notebook sets (a local cluster it starts then
    turns token authentication on, as in `make demo`)."""
    hidden = tmp_path / "newcomer-path" / "ipywidgets"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text('raise ImportError("no ipywidgets: a venv without the lab extra")\n')
    paths = [str(hidden.parent), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    for name in ("TQDM_DISABLE", "HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def tiny_critic(session_build_dir: Path) -> Path:
    from recipe_lib.models.tiny import demo_model_dir, ensure_demo_critic

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


@pytest.fixture(scope="session")
def tiny_qwen3_critic(session_build_dir: Path) -> Path:
    """The tiny Qwen3-VL critic (Cosmos-Reason2's family), built once per session."""
    from recipe_lib.models.tiny import tiny_critic_family
    from recipe_lib.models.tiny_qwen3 import build_tiny_qwen3_critic, default_qwen3_dir

    folder = default_qwen3_dir()
    return folder if tiny_critic_family(folder) == "qwen3-vl" else build_tiny_qwen3_critic(folder)
