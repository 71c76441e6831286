"""`make lab` for real: the Jupyter server JupyterLab runs on (jupyter_server), started headless on 127.0.0.1 with the
settings `plausibility notebooks lab` uses, runs a cell in the project's kernel through its REST and websocket API."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from recipe_lib.notebooks import KERNEL_NAME, jupyter_command, kernel_spec_path
from support import run_cli

pytest.importorskip("jupyter_server", reason="jupyter_server is not installed (the lab extra: pip install '.[lab]')")
requests = pytest.importorskip("requests")
websocket = pytest.importorskip("websocket", reason="websocket-client (a jupyter_server dependency) is not installed")

CODE = "import sys, recipe_lib\nprint(recipe_lib.__name__, sys.executable)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _message(code: str, session: str) -> dict:
    header = {
        "msg_id": uuid.uuid4().hex,
        "msg_type": "execute_request",
        "session": session,
        "username": "test",
        "version": "5.3",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    content = {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False}
    return {"header": header, "parent_header": {}, "metadata": {}, "content": content, "channel": "shell"}


@pytest.fixture
def server(tmp_path: Path):  # noqa: ANN201
    port, token = _free_port(), secrets.token_hex(16)
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            jupyter_command("jupyter_server", port=port, token=token, browser=False),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    base, headers = f"127.0.0.1:{port}", {"Authorization": f"token {token}"}
    try:
        _wait_for(proc, f"http://{base}/api/status", headers, log)
        yield base, headers, token, log
    finally:
        _stop(proc)


def test_a_cell_runs_in_the_project_kernel_through_the_server(server):
    base, headers, token, log = server
    listing = requests.get(f"http://{base}/api/contents", headers=headers, timeout=30).json()
    assert {"01_dataset_exploration.ipynb", "02_zero_shot.ipynb"} <= {item["name"] for item in listing["content"]}

    kernel = requests.post(f"http://{base}/api/kernels", json={"name": KERNEL_NAME}, headers=headers, timeout=120)
    assert kernel.status_code == 201, kernel.text
    kernel_id = kernel.json()["id"]
    ws = websocket.create_connection(f"ws://{base}/api/kernels/{kernel_id}/channels?token={token}", timeout=120)
    try:
        request = _message(CODE, uuid.uuid4().hex)
        ws.send(json.dumps(request))
        stdout, reply, idle = "", None, False
        deadline = time.monotonic() + 120
        while not (reply and idle):
            assert time.monotonic() < deadline, "no reply from the kernel in 120 s"
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != request["header"]["msg_id"]:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream" and msg["content"]["name"] == "stdout":
                stdout += msg["content"]["text"]
            elif kind == "execute_reply":
                reply = msg["content"]
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
    finally:
        ws.close()
    assert reply["status"] == "ok", reply
    spec = json.loads((kernel_spec_path() / "kernel.json").read_text())
    name, executable = stdout.split()
    assert name == "recipe_lib" and Path(executable) == Path(spec["argv"][0])
    assert requests.delete(f"http://{base}/api/kernels/{kernel_id}", headers=headers, timeout=60).status_code == 204
    assert "Kernel is running over TCP without encryption" not in log.read_text()


def _wait_for(proc: subprocess.Popen, url: str, headers: dict, log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert proc.poll() is None, f"the server exited: {log.read_text()[-3000:]}"
        try:
            if requests.get(url, headers=headers, timeout=5).ok:
                return
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"no answer from {url} in {seconds:.0f} s: {log.read_text()[-3000:]}"
        time.sleep(0.5)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_plausibility_notebooks_lab_serves_jupyterlab(tmp_path):
    """What `make lab` runs: the CLI starts JupyterLab itself, which serves its page and the notebooks."""
    if importlib.util.find_spec("jupyterlab") is None:
        pytest.skip("JupyterLab is not installed (the lab extra: make lab installs it)")
    port, token = _free_port(), secrets.token_hex(16)
    log = tmp_path / "lab.log"
    env = {**os.environ, "JUPYTER_TOKEN": token}
    with log.open("w") as out:
        command = [sys.executable, "-m", "recipe_lib.cli", "notebooks", "lab", "--port", str(port), "--no-browser"]
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
    headers = {"Authorization": f"token {token}"}
    try:
        _wait_for(proc, f"http://127.0.0.1:{port}/api/status", headers, log)
        page = requests.get(f"http://127.0.0.1:{port}/lab", headers=headers, timeout=60)
        assert page.status_code == 200 and "JupyterLab" in page.text
        listing = requests.get(f"http://127.0.0.1:{port}/api/contents", headers=headers, timeout=30).json()
        assert "03_sft.ipynb" in {item["name"] for item in listing["content"]}
    finally:
        _stop(proc)


def test_lab_without_jupyterlab_is_a_one_line_error():
    if importlib.util.find_spec("jupyterlab") is not None:
        pytest.skip("JupyterLab is installed here, so the missing-JupyterLab error cannot be reached")
    done = run_cli("notebooks", "lab")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0] == "error: JupyterLab is not installed" and lines[1].startswith("hint: "), done.stderr
