"""The decoder's MLP (``Qwen2MLP``) with its activation, ``silu(gate) * up``, as one kernel when
scoring on the GPU (qvad.model.accel.kernels.silu_mul, bit-identical to the stock kernels).

Only inference takes the kernel, on CUDA, in bfloat16, for ``hidden_act == 'silu'``; everything
else runs the stock expression, so the CPU's numbers are the stock MLP's.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.qwen2.modeling_qwen2 import Qwen2MLP

from qvad.model.accel.kernels.silu_mul import silu_mul
from qvad.model.accel.patch import modules_of, patch_forward, restore_forward


def gated_activation(mlp: Qwen2MLP, x: torch.Tensor) -> torch.Tensor:
    """A SiLU ``Qwen2MLP``'s input to ``down_proj``: ``silu(gate_proj(x)) * up_proj(x)`` via :func:`silu_mul`."""
    return silu_mul(mlp.gate_proj(x), mlp.up_proj(x))


# Mirrors transformers.models.qwen2.modeling_qwen2.Qwen2MLP.forward
def _mlp_forward(self: Qwen2MLP, x: torch.Tensor) -> torch.Tensor:
    """``Qwen2MLP.forward`` with the activation and product as :func:`silu_mul`."""
    return self.down_proj(gated_activation(self, x))


def use_fused_mlp(model: nn.Module) -> int:
    """Give every SiLU ``Qwen2MLP`` of ``model`` the fused activation (idempotent); returns how many."""
    return patch_forward([m for m in modules_of(model, Qwen2MLP) if m.config.hidden_act == "silu"], _mlp_forward)


def disable_fused_mlp(model: nn.Module) -> int:
    """Restore the stock ``Qwen2MLP.forward`` everywhere in ``model`` (for A/B measurements)."""
    return restore_forward(modules_of(model, Qwen2MLP), _mlp_forward)
