"""``--engine ray`` on a real two-node Ray cluster on this machine (head + second node, one CPU each, all on
127.0.0.1, token authentication on as after ``make demo``), scoring real mp4 clips with the real tiny critic: the rows
equal the single-process run; a scoring worker SIGKILLed mid-run and the driver SIGKILLed then rerun lose and duplicate
nothing; the driver sends the token; clear errors without Ray or a cluster."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from recipe_lib.inference.store import read_store
from support import REPO, run_cli, store_count

MARKER = "PLAUSIBILITY_RAY_TEST_CLUSTER"
SECOND_NODE = (
    "import sys, ray._private.services as s; s.get_node_ip_address = lambda address=None: '127.0.0.1'; "
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_pids(marker: str) -> list[int]:
    """Processes of this test's cluster: they carry its marker in their environment."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if f"{MARKER}={marker}".encode() in environ.split(b"\0"):
            pids.append(int(proc.name))
    return pids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _cluster_env(marker: str, **extra: str) -> dict[str, str]:
    """The environment of a test cluster's processes: this one's, less any RAY_AUTH_MODE, with the cluster's
    ``marker`` (see :func:`_cluster_pids`), this checkout importable, and ``extra``."""
    return {
        **{k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"},
        MARKER: marker,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keep 127.0.0.1: Ray would swap it for the interface address
        # A loaded 2-core machine starts the node's agents slowly; the raylet waits this long for them.
        "RAY_agent_register_timeout_ms": "300000",
        "RAY_raylet_start_wait_time_s": "300",
        **extra,
    }


def _wait_for_nodes(port: int, nodes: int, env: dict[str, str], cluster: str, timeout: float | None = None) -> None:
    """Wait (at most 300 s) until a driver at 127.0.0.1:``port`` sees ``nodes`` alive nodes; each probe is a new
    process with ``env``, stopped after ``timeout`` seconds (None: never). ``cluster`` names it in the failure."""
    probe = "import ray; ray.init(address=%r, log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))"
    deadline = time.time() + 300
    while True:
        r = subprocess.run(
            [sys.executable, "-c", probe % f"127.0.0.1:{port}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if r.stdout.strip().splitlines()[-1:] == [str(nodes)]:
            return
        assert time.time() < deadline, f"{cluster} did not come up: {r.stderr[-2000:]}"
        time.sleep(3)


def _stop_cluster(marker: str, temp: str) -> None:
    """Stop the processes of the cluster ``marker`` (SIGTERM, then SIGKILL) and remove its temp dir ``temp``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _cluster_pids(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        time.sleep(2)
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):  # noqa: ANN001, ANN201
    """The README's cluster steps (docs/guides/ray.md) on a machine after ``make demo``: ``ray start --head``, then
    ``ray start --address HEAD`` for a second node, one CPU each, all on 127.0.0.1, on their own ports and temp dir;
    stopped afterwards. A token already exists in ``~/.ray`` (notebook 07's ``ray.init()`` writes one) and
    ``RAY_AUTH_MODE`` is unset, so Ray 2.60's head turns token authentication on by itself and a driver must send the
    token. HOME is a temporary folder, so the real ``~/.ray`` is never read or written. One cluster for the module:
    starting one takes about half a minute of a 2-core machine."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    ray_bin = Path(sys.executable).with_name("ray")
    home = tmp_path_factory.mktemp("home")
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must stay under 107 characters
    port = _free_port()
    marker = f"{os.getpid()}-{port}"
    env = _cluster_env(marker, HOME=str(home))
    made = subprocess.run([ray_bin, "get-auth-token", "--generate"], env=env, capture_output=True, timeout=120)
    assert (home / ".ray" / "auth_token").is_file(), made.stderr
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    head = ["--head", "--port", str(port), "--temp-dir", temp, "--include-dashboard=false"]
    head += ["--dashboard-port", str(_free_port()), "--ray-client-server-port", str(_free_port())]
    second = ["--address", f"127.0.0.1:{port}", "--dashboard-agent-listen-port", str(_free_port())]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "timeout": 300}
    try:
        # 'ray start' gives up after 30 s waiting for its node (the node keeps starting) and leaves daemons holding
        # its stdout: no pipes, then wait for the nodes as a client that sends the token.
        subprocess.run([ray_bin, "start", *head, *common], env=env, **quiet)
        # The second node: Ray 2.60 refuses a second node with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and without it
        # swaps --node-ip-address 127.0.0.1 for the machine's interface address; SECOND_NODE keeps it on 127.0.0.1.
        # Unlike the head, 'ray start --address' does not turn token authentication on by itself: told, it sends the
        # token of ~/.ray (without, the head refuses it: InvalidAuthToken).
        env2 = {k: v for k, v in env.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
        env2["RAY_AUTH_MODE"] = "token"
        subprocess.run([sys.executable, "-c", SECOND_NODE, "start", *second, *common], env=env2, **quiet)
        _wait_for_nodes(port, 2, {**env, "RAY_AUTH_MODE": "token"}, "the two-node cluster", timeout=300)
        yield {"address": f"127.0.0.1:{port}", "marker": marker, "env": env}
    finally:
        _stop_cluster(marker, temp)


def _cli_env(cluster: dict) -> dict:
    """The cluster's environment for :func:`support.run_cli`, which adds this process's: without the session's
    ``RAY_AUTH_MODE``, so the driver finds the token in ``~/.ray`` as a user's does."""
    return {**cluster["env"], "RAY_AUTH_MODE": None}


def _clips(synth_clips, n: int) -> list[str]:  # noqa: ANN001
    return [str(p) for p in sorted((synth_clips.out_dir / "videos").glob("*.mp4"))[:n]]


def _args(tiny_critic, clips: list[str], *extra: str) -> list[str]:  # noqa: ANN001
    return ["score", *clips, "--model", str(tiny_critic), "--device", "cpu", "--no-report", *extra]


def _reference(args: list[str], out: Path) -> dict[str, dict]:
    from recipe_lib.cli import build_parser
    from recipe_lib.commands.score import score_config
    from recipe_lib.inference.scoring import score_videos

    cfg = score_config(build_parser().parse_args([*args, "--out", str(out)]))
    return {r["key"]: r for r in score_videos(cfg, progress=False).rows}


def _same_scores(rows: list[dict], reference: dict[str, dict]) -> None:
    assert len(rows) == len({r["key"] for r in rows}) == len(reference)
    for row in rows:
        ref = reference[row["key"]]
        assert row["score"] == ref["score"]
        assert row["expected_score"] == pytest.approx(ref["expected_score"], abs=1e-4)
        assert row["video"] == ref["video"] and row["item"] == ref["item"]


def test_ray_run_equals_the_single_process_run(ray_cluster, tiny_critic, synth_clips, tmp_path):
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_bytes(b"this is not a video")
    clips = [*_clips(synth_clips, 6), str(not_a_video)]
    args = _args(tiny_critic, clips, "--batch-size", "2")
    reference = _reference(args, tmp_path / "local")
    r = run_cli(
        *args, "--out", str(tmp_path / "ray"), "--engine", "ray", "--address", ray_cluster["address"],
        "--num-workers", "2", env=_cli_env(ray_cluster), timeout=400,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "scored 6 of 7 clips (6 now, 0 cached), 0 unparsed, 1 skipped" in r.stdout, r.stdout
    # Neither Ray's core (restartable actors built from object-store arguments) nor Ray Data (a pool bigger than
    # its inputs) has anything to say about the run.
    assert "core_worker" not in r.stderr and "fully utilize" not in r.stderr, r.stderr
    _same_scores(read_store(tmp_path / "ray"), reference)
    local_skip = (tmp_path / "local" / "skipped.jsonl").read_text()
    ray_skip = (tmp_path / "ray" / "skipped.jsonl").read_text()
    (ls,), (rs,) = [json.loads(x) for x in local_skip.splitlines()], [json.loads(x) for x in ray_skip.splitlines()]
    assert rs["video"] == ls["video"] and rs["reason"].startswith(ls["reason"] + " (on node 127.0.0.1/")
    assert (tmp_path / "ray" / "predictions.csv").exists() and (tmp_path / "ray" / "manifest.csv").exists()
    summary = {k: v for k, v in json.loads((tmp_path / "ray" / "summary.json").read_text()).items() if k != "config"}
    assert summary["scored"] == 6 and summary["skipped"] == 1 and summary["inputs"] == 7


def test_the_pool_is_sized_to_the_batches(tmp_path):
    from recipe_lib.inference.ray_engine import MIN_BLOCKS, input_blocks, pool_size
    from recipe_lib.inference.score_config import ScoreConfig

    cfg = ScoreConfig(inputs=[], out_dir=tmp_path, model="m", batch_size=8, num_workers=4)
    # A few clips: one actor per batch, never one that no batch reaches.
    assert [pool_size(cfg, n) for n in (1, 8, 9, 16, 17, 24, 32, 33, 100_000)] == [1, 1, 2, 2, 3, 3, 4, 4, 4]
    # One clip per block while that is few, so each batch is one input of the pool; a large run is cut into at least
    # MIN_BLOCKS blocks, and four per actor on a cluster with more.
    assert input_blocks(16, 2) == 16 and input_blocks(100_000, 4) == MIN_BLOCKS
    assert input_blocks(100_000, 128) == 512 and input_blocks(300, 128) == 300


def _start(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "recipe_lib.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_rows(proc: subprocess.Popen, store: Path, n: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if store_count(store) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {n} rows landed: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} rows after {timeout} s")


def test_worker_killed_mid_run_is_retried_and_nothing_is_lost(ray_cluster, tiny_critic, synth_clips, tmp_path):
    clips = _clips(synth_clips, 12)
    args = _args(tiny_critic, clips, "--batch-size", "1")
    out = tmp_path / "ray"
    proc = _start(
        [*args, "--out", str(out), "--engine", "ray", "--address", ray_cluster["address"]], ray_cluster["env"]
    )
    _wait_rows(proc, out / "results.sqlite", 2)
    workers = [p for p in _cluster_pids(ray_cluster["marker"]) if "ScoreClips" in _cmdline(p)]
    assert workers, "the scoring actor runs in a process of the cluster"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 0, stderr
    assert store_count(out / "results.sqlite") < len(clips) or "12 of 12" in stdout
    assert "scored 12 of 12 clips (12 now, 0 cached)" in stdout, stdout
    assert "a scoring worker was lost (ActorDiedError); scoring the " in stdout, stdout  # a second pass, new actors
    _same_scores(read_store(out), _reference(args, tmp_path / "local"))


def test_driver_killed_then_rerun_scores_only_what_is_missing(ray_cluster, tiny_critic, synth_clips, tmp_path):
    clips = _clips(synth_clips, 12)
    args = _args(tiny_critic, clips, "--batch-size", "1")
    out = tmp_path / "ray"
    ray_args = [*args, "--out", str(out), "--engine", "ray", "--address", ray_cluster["address"]]
    proc = _start(ray_args, ray_cluster["env"])
    _wait_rows(proc, out / "results.sqlite", 3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    landed = read_store(out)
    assert 3 <= len(landed) < len(clips), "killed mid-run"
    done = run_cli(*ray_args, env=_cli_env(ray_cluster), timeout=400)
    assert done.returncode == 0, done.stderr
    n = len(landed)
    assert f"scored 12 of 12 clips ({12 - n} now, {n} cached)" in done.stdout, done.stdout
    rows = read_store(out)
    assert all(r in rows for r in landed), "rows from before the kill are kept as they were"
    _same_scores(rows, _reference(args, tmp_path / "local"))


def test_no_cluster_at_the_address_is_one_clear_error(tiny_critic, synth_clips, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed")
    port = _free_port()
    r = run_cli(*_args(tiny_critic, _clips(synth_clips, 1)), "--out", str(tmp_path), "--engine", "ray",
                "--address", f"127.0.0.1:{port}")  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.startswith(f"error: no Ray cluster at 127.0.0.1:{port}: "), r.stderr
    assert "hint: start one with 'ray start --head" in r.stderr


def test_without_ray_installed_the_engine_names_the_extra(tiny_critic, synth_clips, tmp_path):
    """Ray hidden from the interpreter (as on a machine without the extra)."""
    code = (
        "import sys; sys.modules['ray'] = None; from recipe_lib.cli import main; "
        f"sys.exit(main(['score', {_clips(synth_clips, 1)[0]!r}, '--model', {str(tiny_critic)!r}, "
        f"'--out', {str(tmp_path)!r}, '--engine', 'ray']))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == [
        "error: the ray engine needs Ray Data, which is not installed",
        "hint: install the ray extra: pip install 'plausibility-recipes[ray]' (or pip install 'ray[data]')",
    ]


def test_importing_the_library_does_not_import_ray():
    code = "import sys, recipe_lib, recipe_lib.cli, recipe_lib.inference.scoring; print('ray' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.stdout.strip() == "False", r.stderr


def test_cluster_with_token_auth_after_the_demo(ray_cluster, tiny_critic, synth_clips, tmp_path):
    """The README's cluster steps after ``make demo``: the driver sends the token the head asks for, the clips are
    scored; and workers that cannot fit the cluster's CPUs are one error before any clip is scored."""
    env, address = ray_cluster["env"], ray_cluster["address"]
    args = [sys.executable, "-m", "recipe_lib.cli", *_args(tiny_critic, _clips(synth_clips, 2))]
    too_many = subprocess.run(
        [*args, "--out", str(tmp_path / "many"), "--engine", "ray", "--address", address, "--num-workers", "50"],
        env=env, capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert too_many.returncode == 2, too_many.stderr
    assert "error: --num-workers 50 needs 25.25 CPUs" in too_many.stderr and "the Ray cluster has 2" in too_many.stderr
    assert "Traceback" not in too_many.stderr and store_count(tmp_path / "many") == 0, "no clip scored"
    done = subprocess.run(
        [*args, "--out", str(tmp_path / "ray"), "--engine", "ray", "--address", address],
        env=env, capture_output=True, text=True, timeout=400, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "scored 2 of 2 clips (2 now, 0 cached)" in done.stdout, done.stdout
    assert "InvalidAuthToken" not in done.stderr
