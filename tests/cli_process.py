"""Run ``plausibility`` in a new process forked from a warm interpreter (used by :func:`support.run_cli`).

A fresh ``python -m recipe_lib.cli`` spends ~15 s of a 2-core machine importing torch, transformers, the Qwen model
code, scikit-learn and datasets before the command does anything; the suite runs the command ~130 times. Here one
server process (:mod:`multiprocessing`'s forkserver) imports those *third-party* libraries once, and every command
runs in a new process forked from it: its own pid, memory, working folder, environment, stdin / stdout / stderr
(real file descriptors 0-2) and exit status, and ``recipe_lib`` itself imported fresh inside it, as a user's run
would. What a warm start cannot reproduce (import-time warnings of the libraries, environment variables those libraries
read while importing) is why :func:`support.run_cli` falls back to a new interpreter when such variables change, and
why the clean-output tests use one always.

This module imports nothing of ``recipe_lib`` at its top: the forkserver unpickles the child's target from here.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

# Imported once by the server (module names; a failing one is skipped by multiprocessing).
PRELOAD = [
    "torch",
    "torchvision",
    "transformers",
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl",
    "transformers.models.qwen2_5_vl.processing_qwen2_5_vl",
    "transformers.models.qwen3_vl.modeling_qwen3_vl",
    "sklearn.metrics",
    "scipy.stats",
    "pandas",
    "pyarrow",
    "av",
    "numpy",
    "PIL.Image",
    "yaml",
    "jinja2",
]

# Environment variables that libraries read while they are imported (their values are frozen in the warm server):
# a call that changes one of these runs in a new interpreter instead.
IMPORT_TIME_PREFIXES = (
    "HF_",
    "HUGGINGFACE",
    "TRANSFORMERS_",
    "TORCH",
    "PYTORCH",
    "CUDA",
    "OMP_",
    "MKL_",
    "PYTHON",
    "RAY_",
    "DATASETS",
    "TOKENIZERS",
    "MPL",
    "XDG_",
    "HOME",
    "LD_",
)

_context: multiprocessing.context.BaseContext | None = None


def _server() -> multiprocessing.context.BaseContext:
    global _context
    if _context is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        _context = ctx
    return _context


def needs_new_interpreter(env: dict[str, str]) -> bool:
    """Whether ``env`` differs from this process's environment in a variable read at import time."""
    changed = {k for k, v in env.items() if os.environ.get(k) != v} | {k for k in os.environ if k not in env}
    return any(k.upper().startswith(IMPORT_TIME_PREFIXES) for k in changed)


def _child(args: list[str], env: dict[str, str], cwd: str, out: str, err: str) -> None:
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, out, os.O_WRONLY), (2, err, os.O_WRONLY)):
        new = os.open(path, flags)
        os.dup2(new, fd)
        os.close(new)
    sys.argv = ["plausibility", *args]
    code: int = 1
    try:
        from recipe_lib.cli import _quiet_libraries

        _quiet_libraries()
        import transformers

        # transformers read TRANSFORMERS_VERBOSITY when the server imported it; apply the value this run has.
        level = os.environ.get("TRANSFORMERS_VERBOSITY")
        if level in transformers.logging.log_levels:
            transformers.logging.set_verbosity(transformers.logging.log_levels[level])
        from recipe_lib.cli import main

        code = main(list(args))
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            code = 1
        else:
            code = int(exc.code or 0)
    except BaseException:  # noqa: BLE001 - what the interpreter would print for an uncaught exception
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()  # the interpreter's exit handlers, as at a normal exit
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_forked(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """``plausibility ARGS`` in a new process forked from the warm server; the result of :func:`subprocess.run`."""
    with tempfile.TemporaryDirectory(prefix="cli-") as tmp:
        out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
        out.touch()
        err.touch()
        proc = _server().Process(target=_child, args=(list(args), env, str(cwd), str(out), str(err)), daemon=False)
        proc.start()
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()
            raise subprocess.TimeoutExpired(["plausibility", *args], timeout, out.read_bytes(), err.read_bytes())
        code = proc.exitcode if proc.exitcode is not None else 1
        return subprocess.CompletedProcess(
            ["plausibility", *args],
            code,
            out.read_text(encoding="utf-8", errors="replace"),
            err.read_text(encoding="utf-8", errors="replace"),
        )
