"""The audio encoder's attention (``Qwen2AudioAttention``) without its head-major copies, for the GPU.

transformers' ``Qwen2AudioAttention`` makes q, k and v ``[batch, heads, frames, dim]`` with
``.transpose(1, 2).contiguous()``: three copies of every layer's activations, and a fourth for the
output. SDPA reads the projections' own ``[batch, frames, heads, dim]`` layout through strides, so
:func:`_attention_forward` hands it transposed views instead. On the 7B's encoder (32 layers,
width 1280) those copies were 2-3 % of the scorer's GPU time (H200 profile by aten op,
benchmarks/results/gpu_throughput_7b_profile_h200_op_sources.json). Same products, same kernel
(the inputs differ in strides only); the equality is checked on CUDA by tests/test_accel.py.

qvad.model.accel.enable installs it off the CPU only, where a strided input could choose another SDPA kernel
and so other rounding: the CPU pipeline's bytes must not depend on it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioAttention, eager_attention_forward

from qvad.model.accel.counting import count
from qvad.model.accel.patch import modules_of, patch_forward, restore_forward


# Mirrors transformers.models.qwen2_audio.modeling_qwen2_audio.Qwen2AudioAttention.forward
# Relies on transformers.models.qwen2_audio.modeling_qwen2_audio.eager_attention_forward (the interface's arguments)
def _attention_forward(self: Qwen2AudioAttention, hidden_states: torch.Tensor,
                       attention_mask: torch.Tensor | None = None, output_attentions: bool = False,
                       **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``Qwen2AudioAttention.forward`` (transformers 5.23) with q/k/v and the output as views."""
    count("strided_encoder_attention")
    batch, frames, _ = hidden_states.size()
    heads = (batch, frames, self.num_heads, self.head_dim)
    # q is scaled before the product, as in the stock forward (Whisper's order of rounding).
    query = (self.q_proj(hidden_states) * self.scaling).view(heads).transpose(1, 2)
    key = self.k_proj(hidden_states).view(heads).transpose(1, 2)
    value = self.v_proj(hidden_states).view(heads).transpose(1, 2)
    attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                                eager_attention_forward)
    attn_output, attn_weights = attention_interface(
        self, query, key, value, attention_mask,
        dropout=0.0 if not self.training else self.dropout,
        scaling=1.0,
        output_attentions=output_attentions,
        **kwargs,
    )
    return self.out_proj(attn_output.reshape(batch, frames, -1)), attn_weights


def use_strided_encoder_attention(model: nn.Module) -> int:
    """Give every ``Qwen2AudioAttention`` of ``model`` :func:`_attention_forward` (idempotent); returns how many."""
    return patch_forward(modules_of(model, Qwen2AudioAttention), _attention_forward)


def disable_strided_encoder_attention(model: nn.Module) -> int:
    """Restore the stock encoder attention everywhere in ``model`` (for A/B measurements)."""
    return restore_forward(modules_of(model, Qwen2AudioAttention), _attention_forward)
