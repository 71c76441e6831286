"""Turning one model patch on or off for a block of code, and back to how the model was.

Part of :mod:`recipe_lib.inference.accel` (see its docstring).
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def toggled(
    model: Any,
    enabled: bool,
    is_on: Callable[[Any], bool],
    enable: Callable[[Any], Any],
    disable: Callable[[Any], Any],
) -> Iterator[Any]:
    """Run the block with the patch ``enabled`` (or not), then restore the state the model had before."""
    before = is_on(model)
    if enabled and not before:
        enable(model)
    elif not enabled and before:
        disable(model)
    try:
        yield model
    finally:
        now = is_on(model)
        if before and not now:
            enable(model)
        elif now and not before:
            disable(model)


def bind_forward(modules: list[Any], forward: Callable[..., Any]) -> int:
    """Make ``forward`` the instance's own forward of each module (the class's stays as it is); returns how many."""
    for module in modules:
        module.forward = types.MethodType(forward, module)
    return len(modules)


def unbind_forward(modules: list[Any], *attributes: str) -> int:
    """Undo :func:`bind_forward` (and drop the named attributes a patch set beside it); returns how many modules had
    a forward of their own."""
    restored = 0
    for module in modules:
        if has_own_forward(module):
            del module.forward
            for name in attributes:
                if name in module.__dict__:
                    delattr(module, name)
            restored += 1
    return restored


def has_own_forward(module: Any) -> bool:
    """Whether :func:`bind_forward` gave ``module`` a forward of its own."""
    return "forward" in module.__dict__
