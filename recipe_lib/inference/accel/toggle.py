"""Turning one model patch on or off for a block of code, and back to how the model was.

Part of :mod:`recipe_lib.inference.accel` (see its docstring).
"""

from __future__ import annotations

import contextlib
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
