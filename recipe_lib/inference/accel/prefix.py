"""Shared prompt prefix: the rubric's keys and values computed once and reused by every batch.

Part of :mod:`recipe_lib.inference.accel` (see its docstring).
"""

from __future__ import annotations

from typing import Any

# --------------------------------------------------------------------------------------------------------------------
# Shared prompt prefix


class PrefixReuse:
    """Keys and values of the prompt text before the video (system rubric, chat header), computed once.

    Every clip's prompt starts with the same few hundred text tokens; a batch whose rows are unpadded and share that
    prefix runs the language model on the rest only, attending to the cached prefix. Positions and rope deltas come
    from the model's own ``get_rope_index`` on the whole prompt, so the result is the same function. Batches with
    padding or different prefixes use the plain forward, and so do prompts where the prefix is under ``min_share`` of
    the tokens: attending to a cache needs an explicit mask, which rules out the flash kernel, and on long prompts
    (7.8 k visual tokens, prefix ~6 %) that costs more than the prefix saves (measured on an H200: 2.04 -> 1.89
    videos/s), while at ~2 k visual tokens (prefix ~19 %) it pays (8.70 -> 9.08). The cache is keyed by the prefix
    tokens and the version counters of the language model's weights, so a model trained in between never reuses
    stale keys.
    """

    def __init__(self, model: Any, min_tokens: int = 16, min_share: float = 0.1) -> None:
        self.model = model
        self.min_tokens = min_tokens
        self.min_share = min_share
        self.vision_start = int(model.config.vision_start_token_id)
        self._key: tuple | None = None
        self._kv: list[tuple[Any, Any]] | None = None
        self.hits = 0
        self.misses = 0

    def _weights_version(self) -> tuple[int, ...]:
        lm = self.model.model.language_model
        return (lm.embed_tokens.weight._version, lm.layers[-1].mlp.down_proj.weight._version, id(lm))

    def prefix_length(self, input_ids: Any, attention_mask: Any) -> int:
        """Length of the text every row shares before its first vision token; 0 when reuse does not apply."""
        if not bool(attention_mask.all()):
            return 0
        starts = (input_ids == self.vision_start).int().argmax(dim=1)
        length = int(starts[0])
        if length < self.min_tokens or length < self.min_share * input_ids.shape[1]:
            return 0
        if not bool((starts == length).all()):
            return 0
        if not bool((input_ids[:, :length] == input_ids[:1, :length]).all()):
            return 0
        return length

    def _prefix_kv(self, ids: Any) -> list[tuple[Any, Any]]:
        key = (tuple(ids.tolist()), self._weights_version())
        if self._key != key or self._kv is None:
            out = self.model.model.language_model(input_ids=ids[None], use_cache=True, return_dict=True)
            self._kv = [(k, v) for k, v in cache_tensors(out.past_key_values)]
            self._key = key
            self.misses += 1
        else:
            self.hits += 1
        return self._kv

    def forward(self, inputs: dict[str, Any], use_cache: bool = False) -> Any:
        """The model's output on ``inputs`` (logits of the last position), reusing the prefix when it applies."""
        import torch
        from transformers import DynamicCache

        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        length = self.prefix_length(ids, mask)
        if not length:
            return self.model(**inputs, use_cache=use_cache, logits_to_keep=1, return_dict=True)
        rows, total = ids.shape
        cache = DynamicCache()
        for layer, (k, v) in enumerate(self._prefix_kv(ids[0, :length])):
            cache.update(k.expand(rows, -1, -1, -1).contiguous(), v.expand(rows, -1, -1, -1).contiguous(), layer)
        position_ids, rope_deltas = self.model.model.get_rope_index(
            ids, None, inputs.get("video_grid_thw"), inputs.get("second_per_grid_ts"), mask
        )
        self.model.model.rope_deltas = rope_deltas
        extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        return self.model(
            input_ids=ids[:, length:],
            attention_mask=mask,
            position_ids=position_ids[:, :, length:],
            past_key_values=cache,
            cache_position=torch.arange(length, total, device=ids.device),
            use_cache=True,
            logits_to_keep=1,
            return_dict=True,
            **extra,
        )


def cache_tensors(past: Any) -> list[tuple[Any, Any]]:
    if hasattr(past, "layers"):  # transformers >= 4.56
        return [(layer.keys, layer.values) for layer in past.layers]
    if hasattr(past, "key_cache"):
        return list(zip(past.key_cache, past.value_cache))
    return [(k, v) for k, v in past]
