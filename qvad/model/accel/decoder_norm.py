"""The decoder's RMSNorm (``Qwen2RMSNorm``) through torch's fused kernel, off the CPU.

The stock forward upcasts to float32 and takes ~6 elementwise kernels per norm; on the GPU that
was 9 % of scoring and 15 % of LoRA training time on the 7B (measured, H100). The fused kernel
also accumulates in float32; the product with the weight is rounded once instead of twice (bf16
outputs differ by at most an ulp or so), so qvad.model.accel.enable installs it on accelerators
only: the CPU keeps the stock arithmetic, whose bytes the pipeline pins.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

from qvad.model.accel.counting import count
from qvad.model.accel.patch import modules_of, patch_forward, restore_forward


# Mirrors transformers.models.qwen2.modeling_qwen2.Qwen2RMSNorm.forward
def _fused_rms_norm_forward(self: Qwen2RMSNorm, hidden_states: torch.Tensor) -> torch.Tensor:
    """Qwen2RMSNorm through torch's fused kernel; mixed dtypes take the stock path."""
    if hidden_states.dtype != self.weight.dtype:
        return Qwen2RMSNorm.forward(self, hidden_states=hidden_states)
    count("fused_rms_norm")
    return torch.nn.functional.rms_norm(hidden_states, self.weight.shape, self.weight, self.variance_epsilon)


def use_fused_rms_norm(model: nn.Module) -> int:
    """Run every Qwen2RMSNorm of ``model`` (65 in the 7B's language model) as one fused kernel;
    returns how many."""
    return patch_forward(modules_of(model, Qwen2RMSNorm), _fused_rms_norm_forward)


def disable_fused_rms_norm(model: nn.Module) -> int:
    """Restore the stock ``Qwen2RMSNorm.forward`` everywhere in ``model`` (for A/B measurements)."""
    return restore_forward(modules_of(model, Qwen2RMSNorm), _fused_rms_norm_forward)
