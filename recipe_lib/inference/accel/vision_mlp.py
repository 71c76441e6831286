"""Padded vision MLP: the 7B vision MLP's hidden size padded to a multiple of 128 so fast GEMM kernels run.

Part of :mod:`recipe_lib.inference.accel` (see its docstring).
"""

from __future__ import annotations

import contextlib
from typing import Any

from recipe_lib.inference.accel.toggle import bind_forward, has_own_forward, toggled, unbind_forward
from recipe_lib.inference.accel.vision_attention import _vision_modules


def _padded_mlp_forward(self: Any, hidden_state: Any) -> Any:
    """The vision MLP, act(gate(x)) * up(x) then down, with the hidden size padded by zeros to ``_recipe_pad_to``:
    padded gate/up rows give act(0) * 0 = 0 and padded down columns are zero, so the function is unchanged, while the
    matrix shapes become multiples that Hopper's fast GEMM kernels accept (3420 is not a multiple of 8). Gate and up
    run as one product. Padded weights are built per call from the live parameters (no stale copies)."""
    import torch.nn.functional as F

    p = self._recipe_pad_to
    weight, bias, down_weight = padded_gate_up_down(self.gate_proj, self.up_proj, self.down_proj, p)
    g, u = F.linear(hidden_state, weight, bias).split(p, dim=-1)
    return F.linear(self.act_fn(g) * u, down_weight, self.down_proj.bias)


def padded_gate_up_down(gate: Any, up: Any, down: Any, p: int) -> tuple[Any, Any, Any]:
    """A gated MLP's weights with its hidden size padded by zeros to ``p``: gate and up stacked as one (2p, in)
    weight (gate rows first, up rows from row ``p``), their bias stacked likewise (None when the gate has none), and
    the down weight with zero columns from its hidden size up to ``p``."""
    n = gate.out_features
    weight = gate.weight.new_zeros(2 * p, gate.in_features)
    weight[:n].copy_(gate.weight)
    weight[p : p + n].copy_(up.weight)
    bias = None
    if gate.bias is not None:
        bias = gate.bias.new_zeros(2 * p)
        bias[:n].copy_(gate.bias)
        bias[p : p + n].copy_(up.bias)
    down_weight = down.weight.new_zeros(down.out_features, p)
    down_weight[:, :n].copy_(down.weight)
    return weight, bias, down_weight


def _vision_mlps(model: Any) -> list[Any]:
    qmod = _vision_modules()
    return [m.mlp for m in model.modules() if isinstance(m, qmod.Qwen2_5_VLVisionBlock)]


def enable_padded_vision_mlp(model: Any, multiple: int = 128) -> int:
    """Patch the vision MLPs whose hidden size is not a multiple of ``multiple``; returns how many were patched."""
    chosen = [mlp for mlp in _vision_mlps(model) if mlp.gate_proj.out_features % multiple]
    for mlp in chosen:
        mlp._recipe_pad_to = -(-mlp.gate_proj.out_features // multiple) * multiple
    return bind_forward(chosen, _padded_mlp_forward)


def disable_padded_vision_mlp(model: Any) -> int:
    return unbind_forward(_vision_mlps(model), "_recipe_pad_to")


def padded_vision_mlp(model: Any, enabled: bool = True, multiple: int = 128) -> contextlib.AbstractContextManager[Any]:
    """Run a block with the padded vision MLP on (or off), then put the model back as it was."""
    return toggled(
        model,
        enabled,
        lambda m: any(has_own_forward(mlp) for mlp in _vision_mlps(m)),
        lambda m: enable_padded_vision_mlp(m, multiple),
        disable_padded_vision_mlp,
    )
