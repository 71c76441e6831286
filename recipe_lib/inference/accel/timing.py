"""Measurement: split a batch's model time into vision tower, prefill and decoding.

Part of :mod:`recipe_lib.inference.accel` (see its docstring).
"""

from __future__ import annotations

import time
from typing import Any

# --------------------------------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------------------------------


class PhaseTimer:
    """Time the vision tower and the language model's calls inside a block (device-synchronised hooks).

    ``vision_s`` sums the vision tower's forwards; ``lm_first_s`` is the first language-model call (the prefill);
    ``lm_rest_s`` the others (decode steps that go through Python; graph replays do not call the model).
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.vision_s = 0.0
        self.lm_first_s = 0.0
        self.lm_rest_s = 0.0
        self.lm_calls = 0
        self._handles: list[Any] = []
        self._t0: dict[str, float] = {}
        cuda = any(p.is_cuda for p in model.parameters())
        self._sync = _cuda_sync if cuda else (lambda: None)

    def _pre(self, name: str) -> Any:
        def hook(*_: Any) -> None:
            self._sync()
            self._t0[name] = time.perf_counter()

        return hook

    def _post(self, name: str) -> Any:
        def hook(*_: Any) -> None:
            self._sync()
            elapsed = time.perf_counter() - self._t0.pop(name)
            if name == "vision":
                self.vision_s += elapsed
            elif self.lm_calls == 0:
                self.lm_first_s += elapsed
                self.lm_calls += 1
            else:
                self.lm_rest_s += elapsed
                self.lm_calls += 1

        return hook

    def __enter__(self) -> PhaseTimer:
        for name, module in (("vision", self.model.model.visual), ("lm", self.model.model.language_model)):
            self._handles.append(module.register_forward_pre_hook(self._pre(name), with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._post(name), with_kwargs=True))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def _cuda_sync() -> None:
    import torch

    torch.cuda.synchronize()
