"""``plausibility`` — the command line. Each sub-command is a thin wrapper over the function a notebook calls.

Sub-commands live in ``recipe_lib/commands/<name>.py``; each module defines ``register(subparsers)`` which adds its
parser and sets ``func`` (taking the parsed ``argparse.Namespace`` and returning an exit code). Modules are found
with :mod:`pkgutil`, so adding a command never edits this file.
"""

from __future__ import annotations

import argparse
import importlib
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


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RecipeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished work is saved; rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as exc:
        if os.environ.get("PLAUSIBILITY_DEBUG"):
            raise
        # Disk full, permission denied, read-only folder: a one-line message naming the file, not a traceback.
        name = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"error: {exc.strerror or exc}{name}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
