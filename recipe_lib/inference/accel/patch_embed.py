"""Linear patch embedding: the vision tower's first layer as one matrix product instead of a 3-D convolution.

Part of :mod:`recipe_lib.inference.accel` (see its docstring).

Qwen2.5-VL and Qwen3-VL embed each patch (3 channels x 2 frames x 14 x 14 pixels, flattened by the processor) with a
``Conv3d`` whose kernel equals its stride and covers the whole patch. Such a convolution has one output position per
patch: it is the linear map ``x @ W.reshape(out, -1).T (+ b)``, the same function. On a CPU the convolution kernel took
18 ms a batch of 16 demo clips (4 096 patches) where the product takes 9 ms, and 34 ms where the product takes 15 ms
with its backward pass (2-core machine, 2026-12-02), so training and CPU scoring run the product.
"""

from __future__ import annotations

import contextlib
from typing import Any

from recipe_lib.inference.accel.toggle import bind_forward, has_own_forward, toggled, unbind_forward

# transformers' patch embedding classes (Qwen2.5-VL, Qwen3-VL): their forward is view -> Conv3d -> view.
PATCH_EMBED_CLASSES = ("Qwen2_5_VisionPatchEmbed", "Qwen3VLVisionPatchEmbed")


def _is_patchwise_conv(conv: Any) -> bool:
    """A Conv3d with one output per input patch: kernel == stride, no padding, dilation or groups."""
    import torch

    return (
        isinstance(conv, torch.nn.Conv3d)
        and tuple(conv.kernel_size) == tuple(conv.stride)
        and tuple(conv.padding) == (0, 0, 0)
        and tuple(conv.dilation) == (1, 1, 1)
        and conv.groups == 1
    )


def _linear_forward(self: Any, hidden_states: Any) -> Any:
    import torch.nn.functional as F

    conv = self.proj
    if not _is_patchwise_conv(conv):  # replaced since (an adapter, say): the stock path knows what to do
        return type(self).forward(self, hidden_states)
    weight = conv.weight
    flat = hidden_states.reshape(-1, weight[0].numel()).to(weight.dtype)
    return F.linear(flat, weight.reshape(weight.shape[0], -1), conv.bias)


def _patch_embeds(model: Any) -> list[Any]:
    return [m for m in model.modules() if type(m).__name__ in PATCH_EMBED_CLASSES]


def enable_linear_patch_embed(model: Any) -> int:
    """Run every patch embedding of ``model`` as a matrix product (in place); returns how many were patched."""
    return bind_forward([m for m in _patch_embeds(model) if _is_patchwise_conv(m.proj)], _linear_forward)


def disable_linear_patch_embed(model: Any) -> int:
    """Undo :func:`enable_linear_patch_embed`; returns how many were restored."""
    return unbind_forward(_patch_embeds(model))


def linear_patch_embed_enabled(model: Any) -> bool:
    return any(has_own_forward(m) for m in _patch_embeds(model))


def linear_patch_embed(model: Any, enabled: bool = True) -> contextlib.AbstractContextManager[Any]:
    """Run a block with the linear patch embedding on (or off), then put the model back as it was."""
    return toggled(model, enabled, linear_patch_embed_enabled, enable_linear_patch_embed, disable_linear_patch_embed)
