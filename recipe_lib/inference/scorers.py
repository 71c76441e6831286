"""The scoring backends behind one small interface: ``hf`` (transformers, in process), ``vllm`` (in process) and
``openai`` (a served OpenAI-compatible endpoint)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from recipe_lib.inference.score_config import ScoreConfig


class Scorer(Protocol):
    """What every backend offers (:class:`~recipe_lib.inference.hf.HFScorer`,
    :class:`~recipe_lib.inference.vllm.VLLMScorer`, :class:`~recipe_lib.inference.endpoint.EndpointScorer`):
    ``prepare`` one clip on a CPU worker thread (decode, size, build the request), then ``score_batch`` the prepared
    clips, one result row (or ``{"skip_reason": ...}``) each, in order."""

    def prepare(self, item: dict[str, Any]) -> Any: ...

    def score_batch(self, prepared: list[Any]) -> list[dict[str, Any]]: ...

    @classmethod
    def from_config(cls, cfg: ScoreConfig, prompt: Any) -> Scorer: ...


# backend name -> "module:class"; each class has ``from_config(cfg, prompt)``. A new backend is one line here.
BACKENDS = {
    "hf": "recipe_lib.inference.hf:HFScorer",
    "vllm": "recipe_lib.inference.vllm:VLLMScorer",
    "openai": "recipe_lib.inference.endpoint:EndpointScorer",
}


def make_scorer(cfg: ScoreConfig, prompt: Any) -> Scorer:
    """The backend ``cfg.backend`` names, built from the config and the prompt (imports stay lazy: ``import recipe_lib``
    never imports vllm)."""
    module, name = BACKENDS[cfg.backend].split(":")
    return getattr(importlib.import_module(module), name).from_config(cfg, prompt)
