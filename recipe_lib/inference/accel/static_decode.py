"""Static-cache decoding: preallocated keys/values, batched on-device sampling, CUDA-graph replay.

Part of :mod:`recipe_lib.inference.accel` (see its docstring).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from recipe_lib.errors import RecipeError
from recipe_lib.inference.accel.core import _CHECK_EVERY, DECODE_ATTENTION
from recipe_lib.inference.accel.prefix import cache_tensors

if TYPE_CHECKING:  # pragma: no cover
    from recipe_lib.inference.accel.prefix import PrefixReuse

# --------------------------------------------------------------------------------------------------------------------
# Static-cache decoding
# --------------------------------------------------------------------------------------------------------------------


def gqa_decode_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Attention for one new token per sequence over a static cache, without copying key/value heads.

    The ``heads / kv_heads`` query heads that share a key/value head are laid out as that head's query rows, so one
    attention call reads each cached key and value once. Longer queries use transformers' sdpa function.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, q_len, head_dim = query.shape
    kv_heads = key.shape[1]
    if q_len != 1 or heads % kv_heads:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    mask = attention_mask[:, :, :, : key.shape[-2]] if attention_mask is not None else None
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, head_dim)
    out = torch.nn.functional.scaled_dot_product_attention(grouped, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(batch, heads, 1, head_dim).transpose(1, 2).contiguous(), None


def _register_decode_attention() -> None:
    from transformers import AttentionInterface

    if DECODE_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(DECODE_ATTENTION, gqa_decode_attention)


class StaticKV:
    """Preallocated keys and values of every language-model layer, updated in place (duck-types transformers'
    cache ``update``). Buffers start zeroed: masked slots must hold finite numbers."""

    def __init__(self, layers: int, batch: int, kv_heads: int, max_len: int, head_dim: int, dtype: Any, device: Any):
        import torch

        shape = (batch, kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.max_len = max_len

    def update(self, key_states: Any, value_states: Any, layer_idx: int, cache_kwargs: dict | None = None) -> Any:
        position = cache_kwargs["cache_position"]
        self.keys[layer_idx].index_copy_(2, position, key_states)
        self.values[layer_idx].index_copy_(2, position, value_states)
        return self.keys[layer_idx], self.values[layer_idx]

    def load(self, past: Any) -> None:
        """Copy a prefilled transformers cache (``DynamicCache``) into the first positions of the buffers."""
        for layer, (k, v) in enumerate(cache_tensors(past)):
            length = k.shape[2]
            self.keys[layer][:, :, :length].copy_(k)
            self.values[layer][:, :, :length].copy_(v)


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    """Device-side sampling; ``temperature <= 0`` is greedy (after the repetition penalty)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0


def sample_next(logits: Any, seen: Any | None, s: SamplerSettings) -> Any:
    """Next token per row from float logits ``(batch, vocab)``, in transformers' order: repetition penalty over
    every token seen so far (prompt included), temperature, top-k, top-p, then a draw. The draw uses the
    exponential-race form of sampling (argmax of p / E with E ~ Exp(1)), which needs no host sync, so it can sit
    inside a CUDA graph."""
    import torch

    if seen is not None and s.repetition_penalty != 1.0:
        penalised = torch.where(logits < 0, logits * s.repetition_penalty, logits / s.repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    if s.temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / s.temperature
    if 0 < s.top_k < logits.shape[-1]:
        values, index = logits.topk(s.top_k, dim=-1)
    else:
        values, index = logits.sort(dim=-1, descending=True)
    if s.top_p < 1.0:
        probs = values.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass of the more likely tokens
        values = values.masked_fill(before >= s.top_p, float("-inf"))
    probs = values.softmax(dim=-1)
    race = torch.empty_like(probs).exponential_(1.0)
    choice = (probs / race).argmax(dim=-1, keepdim=True)
    return index.gather(-1, choice).squeeze(-1)


@dataclasses.dataclass
class DecodeResult:
    tokens: Any  # (rows, max_new_tokens) long, pad after the end of each sequence
    lengths: list[int]  # generated tokens per row (end token included)
    prefill_s: float
    decode_s: float
    steps: int
    graph_captured: bool


class _DecodeState:
    """Buffers one decode step reads and writes; a captured graph is tied to their addresses."""

    def __init__(self, model: Any, batch: int, max_len: int, max_new: int, vocab: int, penalty: bool) -> None:
        import torch

        lm = model.model.language_model
        attn = lm.layers[0].self_attn
        device = lm.embed_tokens.weight.device
        dtype = lm.embed_tokens.weight.dtype
        self.kv = StaticKV(len(lm.layers), batch, attn.num_key_value_heads, max_len, attn.head_dim, dtype, device)
        self.mask = torch.zeros(batch, 1, 1, max_len, dtype=torch.bool, device=device)
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        self.prompt_len = torch.zeros(1, dtype=torch.long, device=device)
        self.rope_deltas = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.seen = torch.zeros(batch, vocab, dtype=torch.bool, device=device) if penalty else None
        self.finished = torch.zeros(batch, dtype=torch.bool, device=device)
        self.out = torch.zeros(batch, max_new, dtype=torch.long, device=device)
        self.batch, self.max_len, self.max_new = batch, max_len, max_new


class StaticDecoder:
    """Prefill with the model's forward, then decode into a static cache; ``use_graph`` replays each step as a CUDA
    graph (captured once per batch size, cache length and sampler settings, and reused across batches)."""

    def __init__(
        self, model: Any, pad_id: int, eos_ids: list[int], use_graph: bool = False, prefix: PrefixReuse | None = None
    ) -> None:
        import torch

        self.model = model
        self.prefix = prefix
        self.pad_id = int(pad_id)
        self.eos_ids = sorted({int(e) for e in eos_ids})
        device = model.model.language_model.embed_tokens.weight.device
        if use_graph and device.type != "cuda":
            raise RecipeError("CUDA-graph decoding needs a CUDA device", hint="use decoder='static' on CPU")
        self.use_graph = use_graph
        self.device = device
        self._eos = torch.tensor(self.eos_ids, dtype=torch.long, device=device)
        self._key: tuple | None = None
        self._state: _DecodeState | None = None
        self._graph: Any = None
        _register_decode_attention()
        if not all(hasattr(layer.self_attn.config, "_attn_implementation_internal") for layer in self._layers()):
            import transformers

            raise RecipeError(
                f"static decoding does not know transformers {transformers.__version__}'s attention configuration",
                hint="use transformers 4.57 (the pinned version) or decoder='hf'",
            )
        self._configs = list({id(layer.self_attn.config): layer.self_attn.config for layer in self._layers()}.values())

    def _layers(self) -> Any:
        return self.model.model.language_model.layers

    def _sync(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)

    def release(self) -> None:
        """Drop the buffers and the captured graph (they hold device memory sized for the last batch shape)."""
        self._key, self._state, self._graph = None, None, None

    def _step(self, s: _DecodeState, sampler: SamplerSettings) -> None:
        logits = self._logits(s)
        self._accept(s, sample_next(logits, s.seen, sampler), s.position - s.prompt_len + 1)
        s.position.add_(1)

    def _logits(self, s: _DecodeState) -> Any:
        lm = self.model.model.language_model
        embeds = lm.embed_tokens(s.token)
        position_ids = (s.position + s.rope_deltas).view(1, s.batch, 1).expand(3, s.batch, 1)
        s.mask.index_fill_(3, s.position, True)
        hidden = lm(
            inputs_embeds=embeds,
            position_ids=position_ids,
            attention_mask={"full_attention": s.mask},
            past_key_values=s.kv,
            cache_position=s.position,
            use_cache=True,
            return_dict=True,
        ).last_hidden_state
        return self.model.lm_head(hidden[:, -1, :]).float()

    def _accept(self, s: _DecodeState, token: Any, index: Any) -> None:

        token = token.masked_fill(s.finished, self.pad_id)
        s.out.index_copy_(1, index, token[:, None])
        s.finished |= (token[:, None] == self._eos[None, :]).any(dim=-1)
        if s.seen is not None:
            s.seen.scatter_(1, token[:, None], True)
        s.token.copy_(token[:, None])

    def _prepare(self, batch: int, max_len: int, max_new: int, vocab: int, sampler: SamplerSettings) -> _DecodeState:
        key = (batch, max_len, max_new, vocab, sampler)
        if self._key != key:
            self.release()
            if self.device.type == "cuda":
                import torch

                torch.cuda.empty_cache()
            self._state = _DecodeState(self.model, batch, max_len, max_new, vocab, sampler.repetition_penalty != 1.0)
            self._key = key
        assert self._state is not None
        return self._state

    def _capture(self, s: _DecodeState, sampler: SamplerSettings) -> None:
        import torch

        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up outside the graph (allocator, cuBLAS workspaces, lazy inits)
                s.position.fill_(0)
                self._step(s, sampler)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        s.position.fill_(0)
        with torch.cuda.graph(graph):
            self._step(s, sampler)
        self._graph = graph

    def generate(self, inputs: dict[str, Any], sampler: SamplerSettings, max_new_tokens: int, trials: int = 1) -> Any:
        """Sample ``trials`` continuations of each prompt in ``inputs`` (the processor's left-padded batch)."""
        import torch

        if max_new_tokens < 1:
            raise RecipeError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        start = time.perf_counter()
        out = self._prefill(inputs)
        logits = out.logits[:, -1, :].float()
        rope_deltas = self.model.model.rope_deltas
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        past = out.past_key_values
        if trials > 1:
            logits = logits.repeat_interleave(trials, dim=0)
            rope_deltas = rope_deltas.repeat_interleave(trials, dim=0)
            input_ids = input_ids.repeat_interleave(trials, dim=0)
            attention_mask = attention_mask.repeat_interleave(trials, dim=0)
        rows, prompt_len = input_ids.shape
        vocab = logits.shape[-1]
        # Round the cache up so that batches of similar length share one captured graph.
        max_len = -(-(prompt_len + max_new_tokens) // 256) * 256
        s = self._prepare(rows, max_len, max_new_tokens, vocab, sampler)
        cfg_attn = [c._attn_implementation_internal for c in self._configs]
        try:
            for c in self._configs:
                c._attn_implementation_internal = DECODE_ATTENTION
            captured = False
            if self.use_graph and self._graph is None and max_new_tokens > 1:
                self._capture(s, sampler)
                captured = True
            self._load(s, past, trials, attention_mask, input_ids, rope_deltas, prompt_len)
            del past, out
            self._accept(s, sample_next(logits, s.seen, sampler), torch.zeros(1, dtype=torch.long, device=self.device))
            self._sync()
            prefill_s = time.perf_counter() - start
            start = time.perf_counter()
            steps = 0
            for i in range(1, max_new_tokens):
                if self._graph is not None:
                    self._graph.replay()
                else:
                    self._step(s, sampler)
                steps += 1
                if i % _CHECK_EVERY == 0 and bool(s.finished.all()):
                    break
            tokens = s.out.clone()
            self._sync()
            decode_s = time.perf_counter() - start
        finally:
            for c, impl in zip(self._configs, cfg_attn):
                c._attn_implementation_internal = impl
        tokens[:, steps + 1 :] = self.pad_id
        lengths = generated_lengths(tokens, self.eos_ids, steps + 1)
        return DecodeResult(tokens, lengths, prefill_s, decode_s, steps, captured)

    def _prefill(self, inputs: dict[str, Any]) -> Any:
        if self.prefix is not None:
            return self.prefix.forward(inputs, use_cache=True)
        return self.model(**inputs, use_cache=True, logits_to_keep=1, return_dict=True)

    def step_logits(self, inputs: dict[str, Any], tokens: Any) -> Any:
        """Logits after the prompt followed by ``tokens`` (one per row), computed the way decoding does (prefill, then
        one step over the static cache, without a graph); for checking against a full forward."""
        import torch

        out = self._prefill(inputs)
        rows, prompt_len = inputs["input_ids"].shape
        max_len = -(-(prompt_len + 2) // 256) * 256
        s = _DecodeState(self.model, rows, max_len, 2, out.logits.shape[-1], penalty=False)
        saved = [c._attn_implementation_internal for c in self._configs]
        try:
            for c in self._configs:
                c._attn_implementation_internal = DECODE_ATTENTION
            self._load(
                s,
                out.past_key_values,
                1,
                inputs["attention_mask"],
                inputs["input_ids"],
                self.model.model.rope_deltas,
                prompt_len,
            )
            s.token.copy_(tokens.view(-1, 1).to(s.token.device))
            with torch.inference_mode():
                return self._logits(s)
        finally:
            for c, impl in zip(self._configs, saved):
                c._attn_implementation_internal = impl

    def _load(
        self,
        s: _DecodeState,
        past: Any,
        trials: int,
        attention_mask: Any,
        input_ids: Any,
        rope_deltas: Any,
        prompt_len: int,
    ) -> None:
        for layer, (k, v) in enumerate(cache_tensors(past)):
            if trials > 1:
                k, v = k.repeat_interleave(trials, dim=0), v.repeat_interleave(trials, dim=0)
            s.kv.keys[layer][:, :, :prompt_len].copy_(k)
            s.kv.values[layer][:, :, :prompt_len].copy_(v)
        s.mask.zero_()
        s.mask[:, 0, 0, :prompt_len].copy_(attention_mask.bool())
        s.position.fill_(prompt_len)
        s.prompt_len.fill_(prompt_len)
        s.rope_deltas.copy_(rope_deltas.view(-1, 1))
        s.finished.zero_()
        s.out.fill_(self.pad_id)
        if s.seen is not None:
            s.seen.zero_()
            s.seen.scatter_(1, input_ids, True)


def generated_lengths(tokens: Any, eos_ids: list[int], produced: int) -> list[int]:
    """Tokens generated per row of ``tokens`` (rows, produced): up to and including the first end token."""
    lengths = []
    for row in tokens.tolist():
        n = produced
        for i, t in enumerate(row[:produced]):
            if t in eos_ids:
                n = i + 1
                break
        lengths.append(n)
    return lengths
