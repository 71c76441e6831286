"""Float8 linear layers (``ScoreConfig.precision = "fp8"``): the language model's and the vision tower's matrix
products on the GPU's float8 units, through torchao.

Part of :mod:`recipe_lib.inference.accel` (see its docstring).

Every ``nn.Linear`` of the language model and of the vision tower whose two dimensions are multiples of 16 (what the
float8 matrix kernels take) gets torchao's float8 weight with dynamic activation scaling
(``Float8DynamicActivationFloat8WeightConfig``; ``rowwise``: one scale per token and per output channel, the default,
or ``tensorwise``: one scale per tensor). The output head stays in the model's dtype (the scores are read from its
logits), and so do the patch embedding (a convolution), norms, attention and rotary embeddings. The 7B vision MLP's
hidden size (3420) is not a multiple of 16, so its three layers are first padded with zeros to a multiple of 128
(:func:`pad_vision_mlps`, the same function) and then converted like the others.

Float8 changes the numbers: its agreement with the model's dtype is measured by ``benchmarks/bench_gpu.py`` (max
|Δp(1..5)|, argmax agreement, max |Δ expected score|) beside the agreement of transformers and vLLM in bf16. It needs
an NVIDIA GPU with float8 units (compute capability 8.9 or newer: Ada, Hopper, Blackwell) and torchao (the ``gpu``
extra); anything else is a one-line error.
"""

from __future__ import annotations

from typing import Any

from recipe_lib.errors import RecipeError

GRANULARITIES = ("rowwise", "tensorwise")
TORCHAO_HINT = "install torchao (the gpu extra, pinned in constraints-gpu.txt) or use --precision dtype"


def check_float8_device(device: Any) -> None:
    """Refuse float8 where it cannot run: not CUDA, a GPU without float8 units, or torchao missing."""
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type != "cuda":
        raise RecipeError(
            f"float8 (--precision fp8) runs on NVIDIA GPUs only, not on {dev.type}",
            hint="use a GPU with compute capability 8.9 or newer (Ada, Hopper), or --precision dtype",
        )
    major, minor = torch.cuda.get_device_capability(dev)
    if (major, minor) < (8, 9):
        raise RecipeError(
            f"float8 (--precision fp8) needs float8 matrix units; {torch.cuda.get_device_name(dev)} has compute "
            f"capability {major}.{minor}",
            hint="use a GPU with compute capability 8.9 or newer (Ada, Hopper), or --precision dtype",
        )
    try:
        import torchao  # noqa: F401
    except ImportError as exc:
        raise RecipeError("float8 (--precision fp8) needs the torchao package", hint=TORCHAO_HINT) from exc


# A floor for the per-row (or per-tensor) activation maximum that sets float8's scale: torchao divides by
# max|x| / 448 without a floor, so a row of zeros (a padded token, a token an MLP zeroes) becomes 0/0 = NaN.
ACTIVATION_FLOOR = 1e-12


def _padded_linear(layer: Any, out_features: int, in_features: int, fill_rows: bool = False) -> Any:
    """``layer`` widened to ``out_features`` x ``in_features``; new input columns are zero. New output rows are zero,
    or with ``fill_rows`` repeat the layer's first rows: a row of zeros would get a float8 row scale of 0 (and NaN
    values), while a repeated row only computes a channel that the zero columns of the next layer then ignore."""
    import torch

    new = torch.nn.Linear(
        in_features, out_features, bias=layer.bias is not None, device=layer.weight.device, dtype=layer.weight.dtype
    )
    rows = torch.arange(out_features - layer.out_features, device=layer.weight.device) % layer.out_features
    extra = len(rows)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[: layer.out_features, : layer.in_features].copy_(layer.weight)
        if fill_rows and extra:
            new.weight[layer.out_features :, : layer.in_features].copy_(layer.weight[rows])
        if layer.bias is not None:
            new.bias.zero_()
            new.bias[: layer.out_features].copy_(layer.bias)
            if fill_rows and extra:
                new.bias[layer.out_features :].copy_(layer.bias[rows])
    new.requires_grad_(layer.weight.requires_grad)
    return new


def pad_vision_mlps(model: Any, multiple: int = 128) -> int:
    """Pad the hidden size of every Qwen2.5-VL vision MLP (gate, up and down) to a multiple of ``multiple``, in place.
    The padded gate and up rows repeat real rows (so no weight row is all zeros, which float8's row scaling turns into
    NaN) and the padded down columns are zero, so whatever the padded channels compute is multiplied by zero: the
    function is unchanged. Returns how many MLPs were padded."""
    padded = 0
    for module in model.modules():
        if type(module).__name__ != "Qwen2_5_VLVisionBlock":
            continue
        mlp = module.mlp
        n = mlp.gate_proj.out_features
        if n % multiple == 0:
            continue
        p = -(-n // multiple) * multiple
        mlp.gate_proj = _padded_linear(mlp.gate_proj, p, mlp.gate_proj.in_features, fill_rows=True)
        mlp.up_proj = _padded_linear(mlp.up_proj, p, mlp.up_proj.in_features, fill_rows=True)
        mlp.down_proj = _padded_linear(mlp.down_proj, mlp.down_proj.out_features, p)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = p
        padded += 1
    return padded


def float8_targets(model: Any) -> dict[str, Any]:
    """The linear layers float8 converts, by name: inside the language model or the vision tower, both dimensions
    multiples of 16 (the output head is outside both)."""
    import torch

    targets = {}
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        inside = ".language_model." in f".{name}." or ".visual." in f".{name}."
        if inside and module.in_features % 16 == 0 and module.out_features % 16 == 0:
            targets[name] = module
    return targets


def float8_config(granularity: str = "rowwise") -> Any:
    """torchao's float8 inference config: float8 weights, activations scaled per row (or per tensor) at run time with
    :data:`ACTIVATION_FLOOR` under the scale (a row of zeros stays zeros instead of NaN)."""
    if granularity not in GRANULARITIES:
        raise RecipeError(f"unknown float8 scaling '{granularity}'", hint="use rowwise or tensorwise")
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, PerTensor

    scale = PerRow() if granularity == "rowwise" else PerTensor()
    return Float8DynamicActivationFloat8WeightConfig(granularity=scale, activation_value_lb=ACTIVATION_FLOOR)


def apply_float8(model: Any, granularity: str = "rowwise") -> int:
    """Convert the layers of :func:`float8_targets` (after :func:`pad_vision_mlps`) to torchao float8, in place;
    returns how many layers were converted. The model must sit on a float8-capable GPU."""
    config = float8_config(granularity)
    device = next(model.parameters()).device
    check_float8_device(device)
    from torchao.quantization import quantize_

    pad_vision_mlps(model)
    targets = float8_targets(model)
    chosen = {id(m) for m in targets.values()}
    quantize_(model, config, filter_fn=lambda module, _name: id(module) in chosen)
    return len(targets)
