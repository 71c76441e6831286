"""``plausibility`` — the command line. Each sub-command is a thin wrapper over the function a notebook calls.

Sub-commands live in ``recipe_lib/commands/<name>.py``; each module defines ``register(subparsers)`` which adds its
parser and sets ``func`` (taking the parsed ``argparse.Namespace`` and returning an exit code). Modules are found
with :mod:`pkgutil`, so adding a command never edits this file.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import pkgutil
import sys

from recipe_lib import __version__
from recipe_lib.errors import RecipeError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plausibility",
        description="Score, measure and improve a video physics critic (Cosmos-Reason1 / Qwen2.5-VL).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import recipe_lib.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"recipe_lib.commands.{info.name}")
        module.register(sub)
    return parser


def _quiet_libraries() -> None:
    """Keep library chatter (deprecation notices, hub hints) out of the command's output."""
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # torch logs a deprecation notice per registered enum when transformers imports the model code; users cannot act
    # on it, and it would sit between the command's own lines.
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        from recipe_lib.validation import validate_args

        validate_args(args)  # every option checked before any work
        return int(args.func(args) or 0)
    except RecipeError as exc:
        print(f"error: {_one_line(exc.message)}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {_one_line(exc.hint)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished work is saved; rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as exc:
        if os.environ.get("PLAUSIBILITY_DEBUG"):
            raise
        # Disk full, permission denied, read-only folder: a one-line message naming the file, not a traceback.
        message, hint = describe_os_error(exc)
        print(f"error: {message}", file=sys.stderr)
        print(f"hint: {hint}", file=sys.stderr)
        return 2


def _one_line(text: str) -> str:
    """Messages are printed on one line, whatever a library put in them."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


# errno -> (what happened, what to do). Finished work is kept by every stage (appends and atomic writes), so the
# advice is always "fix the cause and rerun".
_OS_ERRORS = {
    errno.ENOSPC: ("no space left on the device", "free some disk space or choose another output folder, then rerun"),
    errno.EDQUOT: ("disk quota exceeded", "free some space in your quota or choose another output folder, then rerun"),
    errno.EFBIG: (
        "file too large (the size limit for files was reached)",
        "raise the file size limit (ulimit -f) or choose another output folder, then rerun",
    ),
    errno.EROFS: ("read-only file system", "choose an output folder on a writable disk"),
    errno.EACCES: ("permission denied", "choose a folder you can write to, or fix its permissions"),
    errno.EPERM: ("operation not permitted", "choose a folder you can write to, or fix its permissions"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "check the path; choose a folder path for output"),
}


def describe_os_error(exc: OSError) -> tuple[str, str]:
    """A one-line message naming the file, and a hint, for an operating-system error."""
    what, hint = _OS_ERRORS.get(
        exc.errno, (exc.strerror or str(exc), "check the path, its permissions and the free disk space, then rerun")
    )
    where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
    return _one_line(f"{what}{where}"), hint


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
