"""Speed-ups for scoring with transformers' Qwen2.5-VL, each opt-in, each tested against the stock path.

Batched vision attention (:func:`enable_batched_vision_attention`)
    With ``sdpa`` or ``eager`` attention, transformers 4.57's ``Qwen2_5_VLVisionAttention`` splits the patches of a
    video at ``cu_seqlens`` and calls attention once per chunk: once per 112x112 window in the 28 windowed blocks and
    once per frame in the 4 full-attention blocks. A 2 k-token clip makes about 3 600 tiny attention calls, each
    after a host-device sync, so the tower is bound by kernel launches rather than by the GPU. Windows of a frame all
    have the same size except at the right and bottom edges, so the patch groups chunks of equal length and runs
    one attention call per group (at most four per frame size and block). The result is the same function: each
    chunk still attends only to itself.

Padded vision MLP (:func:`enable_padded_vision_mlp`)
    The 7B vision MLP's hidden size, 3420, is not a multiple of 8, so cuBLAS cannot use Hopper's fast GEMM kernels
    for it (measured ~200 TFLOP/s on an H200). Padding it with zeros to 3456 gives the same function on kernels that
    run at full speed; gate and up projections run as one product.

Shared prompt prefix (:class:`PrefixReuse`)
    The rubric before the video is the same for every clip; its keys and values are computed once and reused by
    every unpadded batch where it is at least a tenth of the prompt.

Static-cache decoding (:class:`StaticDecoder`)
    ``generate`` in transformers runs tens of small kernels per layer per token from Python: about 21 ms a token
    for the 7B model at batch 1 and 8 on an H200 (transformers 4.57), while reading its weights takes about 3 ms.
    The decoder prefills with the model's own forward, copies the keys and values into preallocated buffers, and runs
    each further token with the same
    shapes and addresses, so on CUDA the whole step (language model, sampling, bookkeeping) is captured once as a
    CUDA graph and replayed. Sampling (repetition penalty, temperature, top-k, top-p) runs batched on the device.
    Grouped-query attention over the static cache reads each key/value head once (no ``repeat_kv`` copy).

:class:`PhaseTimer` splits a batch's model time into vision tower, language-model prefill and the rest (decoding),
synchronising the device at the boundaries; it is for measurement, not for production runs.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import inspect
import time
import types
from typing import Any

from recipe_lib.errors import RecipeError

DECODE_ATTENTION = "recipe_gqa_decode"
_CHECK_EVERY = 64  # decode steps between checks whether every sequence has finished


@dataclasses.dataclass
class Speedups:
    """Which speed-ups a scorer uses.

    ``batched_vision_attention``  one attention call per group of equal-length windows in the vision tower (with the
                 rotary embedding of queries and keys in one pass).
    ``padded_vision_mlp``  run the vision MLP with its hidden size padded by zeros to a multiple of 128 (3420 ->
                 3456 for the 7B), with gate and up projections in one matrix product.
    ``reuse_prefix``  compute the keys and values of the prompt text before the video once and reuse them for every
                 batch whose rows share it (unpadded batches).
    ``decoder``  ``hf`` (transformers' ``generate``), ``static`` (preallocated cache, device-side sampling) or
                 ``graph`` (``static`` with each decode step replayed as a CUDA graph; CUDA only).
    ``pin_memory``  stage the batch in page-locked memory and copy it to the GPU without blocking.
    """

    batched_vision_attention: bool = True
    decoder: str = "hf"
    pin_memory: bool = False
    padded_vision_mlp: bool = False
    reuse_prefix: bool = False

    def __post_init__(self) -> None:
        if self.decoder not in ("hf", "static", "graph"):
            raise RecipeError(f"unknown decoder '{self.decoder}'", hint="use 'hf', 'static' or 'graph'")

    @classmethod
    def none(cls) -> Speedups:
        """The stock transformers path."""
        return cls(batched_vision_attention=False, decoder="hf", pin_memory=False)

    @classmethod
    def all(cls, decoder: str = "graph") -> Speedups:
        return cls(True, decoder, pin_memory=True, padded_vision_mlp=True, reuse_prefix=True)

    @classmethod
    def for_device(cls, device: str) -> Speedups:
        """Everything that pays on ``device``: on CUDA all of it; on CPU the batched vision attention only."""
        if str(device).startswith("cuda"):
            return cls.all("graph")
        return cls(batched_vision_attention=True, decoder="hf")


def qwen_core(model: Any) -> Any:
    """The ``Qwen2_5_VLForConditionalGeneration`` inside ``model`` (itself, or the base model under a PEFT wrapper,
    whose layers carry the adapters), or None for any other model; the decoder and prefix reuse need its parts."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base if isinstance(base, Qwen2_5_VLForConditionalGeneration) else None


# --------------------------------------------------------------------------------------------------------------------
# Batched vision attention
# --------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _ChunkPlan:
    """How to run the chunks of one ``cu_seqlens``: (length, count, row indices or None when one group covers all)."""

    total: int
    groups: list[tuple[int, int, Any]]


class _PlanCache:
    """Plans keyed by the identity of the ``cu_seqlens`` tensor the vision tower passes to every block.

    The tower builds two such tensors per forward (windows and frames) and hands the same objects to all 32 blocks,
    so a plan is built (one device sync) twice per forward instead of once per block. Entries hold a reference to
    their tensor, so an identity match can never be a different tensor at a reused address.
    """

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self.entries: collections.deque[tuple[Any, _ChunkPlan]] = collections.deque(maxlen=size)

    def get(self, cu_seqlens: Any) -> _ChunkPlan:
        for tensor, plan in self.entries:
            if tensor is cu_seqlens:
                return plan
        plan = build_chunk_plan(cu_seqlens)
        self.entries.append((cu_seqlens, plan))
        return plan


def build_chunk_plan(cu_seqlens: Any) -> _ChunkPlan:
    """Group the chunks ``[cu[i], cu[i+1])`` by length; empty chunks are skipped."""
    import torch

    bounds = cu_seqlens.tolist()
    by_length: dict[int, list[int]] = {}
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end > start:
            by_length.setdefault(end - start, []).append(start)
    total = bounds[-1] - bounds[0]
    if len(by_length) == 1 and bounds[0] == 0:
        (length, starts) = next(iter(by_length.items()))
        return _ChunkPlan(total, [(length, len(starts), None)])
    groups = []
    for length, starts in sorted(by_length.items(), key=lambda kv: -len(kv[1]) * kv[0]):
        rows = (torch.tensor(starts, dtype=torch.long)[:, None] + torch.arange(length)).reshape(-1)
        groups.append((length, len(starts), rows.to(cu_seqlens.device, non_blocking=True)))
    return _ChunkPlan(total, groups)


def _vision_modules() -> Any:
    try:
        from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as qmod
    except ImportError as exc:  # pragma: no cover - transformers is a hard dependency
        raise RecipeError("transformers has no Qwen2.5-VL model", hint="install transformers>=4.57") from exc
    return qmod


def _grouped_forward(
    self: Any,
    hidden_states: Any,
    cu_seqlens: Any,
    rotary_pos_emb: Any = None,
    position_embeddings: Any = None,
    **kwargs: Any,
) -> Any:
    qmod = _vision_modules()
    impl = self.config._attn_implementation
    if impl not in ("sdpa", "eager"):  # flash attention already runs all chunks in one varlen call
        return type(self).forward(self, hidden_states, cu_seqlens, rotary_pos_emb, position_embeddings, **kwargs)
    seq_length = hidden_states.shape[0]
    heads = self.num_heads
    qkv = self.qkv(hidden_states).view(seq_length, 3, heads, -1)
    q, k = rotate_qk(qkv[:, :2], *position_embeddings).unbind(1)
    v = qkv[:, 2]
    head_dim = q.shape[-1]
    attend = qmod.eager_attention_forward if impl == "eager" else qmod.ALL_ATTENTION_FUNCTIONS[impl]
    plan = self._recipe_plans.get(cu_seqlens)
    out = None
    for length, count, rows in plan.groups:
        if rows is None:
            parts = [t.reshape(count, length, heads, head_dim).transpose(1, 2) for t in (q, k, v)]
        else:
            parts = [t.index_select(0, rows).view(count, length, heads, head_dim).transpose(1, 2) for t in (q, k, v)]
        group_out = attend(
            self,
            *parts,
            attention_mask=None,
            scaling=self.scaling,
            dropout=0.0 if not self.training else self.attention_dropout,
            is_causal=False,
            **kwargs,
        )[0]  # (count, length, heads, head_dim)
        if rows is None:
            out = group_out.reshape(seq_length, heads * head_dim)
        else:
            if out is None:
                out = group_out.new_empty(seq_length, heads, head_dim)
            out.index_copy_(0, rows, group_out.reshape(count * length, heads, head_dim))
    if out is None:  # no patches at all
        out = q.new_zeros(seq_length, heads * head_dim)
    return self.proj(out.reshape(seq_length, -1))


def rotate_qk(qk: Any, cos: Any, sin: Any) -> Any:
    """Rotary embedding of queries and keys together, ``qk`` of shape (seq, 2, heads, head_dim), in float32 like
    transformers' ``apply_rotary_pos_emb_vision`` (x cos + rotate_half(x) sin) but in four passes instead of about
    fifteen: rotate_half(x) sin equals roll(x, d/2) times sin with its first half negated."""
    import torch

    half = qk.shape[-1] // 2
    x = qk.float()
    cos = cos.float()[:, None, None, :]
    signed = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1).float()[:, None, None, :]
    return torch.addcmul(x * cos, x.roll(half, dims=-1), signed).to(qk.dtype)


def _padded_mlp_forward(self: Any, hidden_state: Any) -> Any:
    """The vision MLP, act(gate(x)) * up(x) then down, with the hidden size padded by zeros to ``_recipe_pad_to``:
    padded gate/up rows give act(0) * 0 = 0 and padded down columns are zero, so the function is unchanged, while the
    matrix shapes become multiples that Hopper's fast GEMM kernels accept (3420 is not a multiple of 8). Gate and up
    run as one product. Padded weights are built per call from the live parameters (no stale copies)."""
    import torch.nn.functional as F

    n, p = self.gate_proj.out_features, self._recipe_pad_to
    gate, up, down = self.gate_proj, self.up_proj, self.down_proj
    weight = gate.weight.new_zeros(2 * p, gate.in_features)
    weight[:n].copy_(gate.weight)
    weight[p : p + n].copy_(up.weight)
    bias = None
    if gate.bias is not None:
        bias = gate.bias.new_zeros(2 * p)
        bias[:n].copy_(gate.bias)
        bias[p : p + n].copy_(up.bias)
    g, u = F.linear(hidden_state, weight, bias).split(p, dim=-1)
    down_weight = down.weight.new_zeros(down.out_features, p)
    down_weight[:, :n].copy_(down.weight)
    return F.linear(self.act_fn(g) * u, down_weight, down.bias)


def _vision_mlps(model: Any) -> list[Any]:
    qmod = _vision_modules()
    return [m.mlp for m in model.modules() if isinstance(m, qmod.Qwen2_5_VLVisionBlock)]


def enable_padded_vision_mlp(model: Any, multiple: int = 128) -> int:
    """Patch the vision MLPs whose hidden size is not a multiple of ``multiple``; returns how many were patched."""
    patched = 0
    for mlp in _vision_mlps(model):
        n = mlp.gate_proj.out_features
        if n % multiple:
            mlp._recipe_pad_to = -(-n // multiple) * multiple
            mlp.forward = types.MethodType(_padded_mlp_forward, mlp)
            patched += 1
    return patched


def disable_padded_vision_mlp(model: Any) -> int:
    restored = 0
    for mlp in _vision_mlps(model):
        if "forward" in mlp.__dict__:
            del mlp.forward
            del mlp._recipe_pad_to
            restored += 1
    return restored


@contextlib.contextmanager
def padded_vision_mlp(model: Any, enabled: bool = True, multiple: int = 128) -> Any:
    """Run a block with the padded vision MLP on (or off), then put the model back as it was."""
    before = any("forward" in m.__dict__ for m in _vision_mlps(model))
    if enabled and not before:
        enable_padded_vision_mlp(model, multiple)
    elif not enabled and before:
        disable_padded_vision_mlp(model)
    try:
        yield model
    finally:
        now = any("forward" in m.__dict__ for m in _vision_mlps(model))
        if before and not now:
            enable_padded_vision_mlp(model, multiple)
        elif now and not before:
            disable_padded_vision_mlp(model)


def _vision_attention_modules(model: Any, required: bool = True) -> list[Any]:
    qmod = _vision_modules()
    found = [m for m in model.modules() if isinstance(m, qmod.Qwen2_5_VLVisionAttention)]
    if not found and not required:
        return found
    if not found:
        raise RecipeError(
            f"{type(model).__name__} has no Qwen2.5-VL vision attention to patch",
            hint="batched vision attention applies to Qwen2.5-VL models (Cosmos-Reason1, the demo critic)",
        )
    params = inspect.signature(qmod.Qwen2_5_VLVisionAttention.forward).parameters
    if not {"hidden_states", "cu_seqlens", "position_embeddings"} <= set(params):
        import transformers

        raise RecipeError(
            f"transformers {transformers.__version__} changed Qwen2.5-VL's vision attention; the batched patch "
            "does not know this version",
            hint="use transformers 4.57 (the pinned version) or turn batched_vision_attention off",
        )
    return found


def enable_batched_vision_attention(model: Any) -> int:
    """Patch every vision attention block of ``model`` (in place); returns how many were patched."""
    modules = _vision_attention_modules(model)
    plans = _PlanCache()
    for module in modules:
        module._recipe_plans = plans
        module.forward = types.MethodType(_grouped_forward, module)
    return len(modules)


def disable_batched_vision_attention(model: Any) -> int:
    """Undo :func:`enable_batched_vision_attention`; returns how many blocks were restored."""
    restored = 0
    for module in _vision_attention_modules(model):
        if "forward" in module.__dict__:
            del module.forward
            del module._recipe_plans
            restored += 1
    return restored


def batched_vision_attention_enabled(model: Any) -> bool:
    return any("forward" in m.__dict__ for m in _vision_attention_modules(model, required=False))


@contextlib.contextmanager
def batched_vision_attention(model: Any, enabled: bool = True) -> Any:
    """Run a block with the batched vision attention on (or off), then put the model back as it was.

    A model without Qwen2.5-VL vision attention is left alone when ``enabled`` is False and refused when True.
    """
    before = batched_vision_attention_enabled(model)
    if enabled and not before:
        enable_batched_vision_attention(model)
    elif not enabled and before:
        disable_batched_vision_attention(model)
    try:
        yield model
    finally:
        now = batched_vision_attention_enabled(model)
        if before and not now:
            enable_batched_vision_attention(model)
        elif now and not before:
            disable_batched_vision_attention(model)


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
        for layer, (k, v) in enumerate(_cache_tensors(past)):
            length = k.shape[2]
            self.keys[layer][:, :, :length].copy_(k)
            self.values[layer][:, :, :length].copy_(v)


def _cache_tensors(past: Any) -> list[tuple[Any, Any]]:
    if hasattr(past, "layers"):  # transformers >= 4.56
        return [(layer.keys, layer.values) for layer in past.layers]
    if hasattr(past, "key_cache"):
        return list(zip(past.key_cache, past.value_cache))
    return [(k, v) for k, v in past]


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
        for layer, (k, v) in enumerate(_cache_tensors(past)):
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
            self._kv = [(k, v) for k, v in _cache_tensors(out.past_key_values)]
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
