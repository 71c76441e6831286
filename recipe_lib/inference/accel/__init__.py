"""Speed-ups for scoring (and training) with transformers' Qwen2.5-VL, each opt-in, each tested against the stock
path.

Batched vision attention (:func:`enable_batched_vision_attention`)
    With ``sdpa`` or ``eager`` attention, transformers 4.57's ``Qwen2_5_VLVisionAttention`` splits the patches of a
    video at ``cu_seqlens`` and calls attention once per chunk: once per 112x112 window in the 28 windowed blocks and
    once per frame in the 4 full-attention blocks. A 2 k-token clip makes about 3 600 tiny attention calls, each
    after a host-device sync, so the tower is bound by kernel launches rather than by the GPU. Windows of a frame all
    have the same size except at the right and bottom edges, so the patch groups chunks of equal length and runs
    one attention call per group (at most four per frame size and block). The result is the same function: each
    chunk still attends only to itself.

Linear patch embedding (:func:`enable_linear_patch_embed`)
    The vision tower's first layer is a ``Conv3d`` whose kernel is its stride and covers a whole patch: the same
    function as one matrix product over the flattened patches, which a CPU runs about twice as fast (also for
    Qwen3-VL's patch embedding). Training turns it and the batched vision attention on
    (:func:`recipe_lib.train.model.load_train_model`).

Padded vision MLP (:func:`enable_padded_vision_mlp`)
    The 7B vision MLP's hidden size, 3420, is not a multiple of 8, so cuBLAS cannot use Hopper's fast GEMM kernels
    for it (measured ~200 TFLOP/s on an H200). Padding it with zeros to 3456 gives the same function on kernels that
    run at full speed; gate and up projections run as one product.

Packed vision attention (:func:`enable_packed_vision_attention`)
    All chunks of a vision block (windows, or frames in the full-attention blocks) in ONE attention call: chunks laid
    out as rows of a batch padded to the longest, padded keys masked (no mask when all chunks have the same length).
    The same function as the stock per-chunk loop; Qwen2.5-VL and Qwen3-VL.

Fused vision block (:func:`enable_fused_vision_blocks`)
    A Qwen2.5-VL vision block as one pure function (packed attention, the MLP padded with gate and up in one product,
    weights cached), optionally compiled with ``torch.compile`` (static shapes) so norms, rotary, activation and
    residuals fuse around the matrix products.

Float8 linear layers (:func:`apply_float8`)
    ``precision="fp8"``: the language model's and vision tower's linear layers in float8 through torchao (dynamic
    rowwise scaling), on GPUs with float8 units; an opt-in that changes the numbers (its agreement is measured).

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

from recipe_lib.inference.accel.core import (
    DECODE_ATTENTION,
    VISION_PATHS,
    Speedups,
    qwen_core,
)
from recipe_lib.inference.accel.float8 import (
    ACTIVATION_FLOOR,
    apply_float8,
    check_float8_device,
    float8_config,
    float8_targets,
    pad_vision_mlps,
)
from recipe_lib.inference.accel.packed_vision import (
    PackedPlan,
    build_packed_plan,
    disable_fused_vision_blocks,
    disable_packed_vision_attention,
    enable_fused_vision_blocks,
    enable_packed_vision_attention,
    fused_block_math,
    fused_vision_blocks,
    fused_vision_blocks_enabled,
    packed_attention,
    packed_vision_attention,
    packed_vision_attention_enabled,
)
from recipe_lib.inference.accel.patch_embed import (
    disable_linear_patch_embed,
    enable_linear_patch_embed,
    linear_patch_embed,
    linear_patch_embed_enabled,
)
from recipe_lib.inference.accel.prefix import (
    PrefixReuse,
)
from recipe_lib.inference.accel.static_decode import (
    DecodeResult,
    SamplerSettings,
    StaticDecoder,
    StaticKV,
    generated_lengths,
    gqa_decode_attention,
    sample_next,
)
from recipe_lib.inference.accel.timing import (
    PhaseTimer,
)
from recipe_lib.inference.accel.vision_attention import (
    batched_vision_attention,
    batched_vision_attention_enabled,
    build_chunk_plan,
    disable_batched_vision_attention,
    enable_batched_vision_attention,
    rotate_qk,
)
from recipe_lib.inference.accel.vision_mlp import (
    disable_padded_vision_mlp,
    enable_padded_vision_mlp,
    padded_vision_mlp,
)

__all__ = [
    "DECODE_ATTENTION",
    "VISION_PATHS",
    "DecodeResult",
    "PackedPlan",
    "PhaseTimer",
    "PrefixReuse",
    "SamplerSettings",
    "Speedups",
    "StaticDecoder",
    "StaticKV",
    "ACTIVATION_FLOOR",
    "apply_float8",
    "batched_vision_attention",
    "batched_vision_attention_enabled",
    "build_chunk_plan",
    "build_packed_plan",
    "check_float8_device",
    "disable_batched_vision_attention",
    "disable_fused_vision_blocks",
    "disable_linear_patch_embed",
    "disable_packed_vision_attention",
    "disable_padded_vision_mlp",
    "enable_batched_vision_attention",
    "enable_fused_vision_blocks",
    "enable_linear_patch_embed",
    "enable_packed_vision_attention",
    "enable_padded_vision_mlp",
    "float8_config",
    "float8_targets",
    "fused_block_math",
    "fused_vision_blocks",
    "fused_vision_blocks_enabled",
    "generated_lengths",
    "gqa_decode_attention",
    "linear_patch_embed",
    "linear_patch_embed_enabled",
    "pad_vision_mlps",
    "packed_attention",
    "packed_vision_attention",
    "packed_vision_attention_enabled",
    "padded_vision_mlp",
    "qwen_core",
    "rotate_qk",
    "sample_next",
]
