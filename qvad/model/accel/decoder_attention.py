"""The decoder's attention (``Qwen2Attention``) with the shared prefix and the fused rotary embedding.

Each row attends to the shared prompt prefix's keys/values (qvad.model.accel.shared_prefix) and
then to its own. Keys/values are kept ``[batch, tokens, heads, dim]`` (the projection's own
layout); q and k are rotated by qvad.model.accel.kernels.rotary (one kernel on CUDA). Scoring a
padded batch rotates k straight into a keys buffer after the prefix (no concatenation). A batch
without padding (a lower-right ``CausalBias`` mask, used on CUDA) skips the buffers: one kernel
rotates and attends to the prefix and then to each row's own keys
(qvad.model.accel.kernels.prefix_one_pass), so the prefix is never copied into the rows.

The forward replaces ``Qwen2Attention.forward`` per instance (:func:`enable_fast_attention`,
called by qvad.model.accel.enable); it computes what the stock forward computes, in the same
order, and falls back to the stock cache/attention interface for ``generate``. It is a forward
and not a function registered with transformers' ``AttentionInterface``: that interface receives
q, k and v already rotated and laid out head-major, and the prefix and the rotary kernel act
before that point.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.attention.bias import CausalBias
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.qwen2.modeling_qwen2 import Qwen2Attention, eager_attention_forward

from qvad.model.accel.counting import count
from qvad.model.accel.kernels.prefix_one_pass import one_pass_attention
from qvad.model.accel.kernels.rotary import rotary, rotary_into
from qvad.model.accel.patch import modules_of, patch_forward, restore_forward, runs_forward
from qvad.model.accel.shared_prefix import LAST_QUERY_KWARG, PREFIX_KWARG, UNPROJECTED_KWARG, SharedPrefix


# Mirrors transformers.models.qwen2.modeling_qwen2.Qwen2Attention.forward
# Relies on transformers.models.qwen2.modeling_qwen2.eager_attention_forward (the interface's arguments)
def _attention_forward(self: Qwen2Attention, hidden_states: torch.Tensor,
                       position_embeddings: tuple[torch.Tensor, torch.Tensor], attention_mask: torch.Tensor | None,
                       past_key_values: Any = None, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``Qwen2Attention.forward`` (transformers 5.23) with :func:`rotary` and the shared prefix."""
    prefix: SharedPrefix | None = kwargs.pop(PREFIX_KWARG, None)
    last_query = bool(kwargs.pop(LAST_QUERY_KWARG, False))
    project = not kwargs.pop(UNPROJECTED_KWARG, False)
    batch, tokens = hidden_states.shape[:-1]
    split = (batch, tokens, -1, self.head_dim)
    query = self.q_proj(hidden_states).view(split)
    key = self.k_proj(hidden_states).view(split)
    value = self.v_proj(hidden_states).view(split)
    cos, sin = position_embeddings
    fused = getattr(self, "_qvad_fused_rotary", True)
    if prefix is not None and past_key_values is not None:
        raise ValueError("a shared prefix and a KV cache cannot be combined")
    scoring = prefix is not None and not prefix.recording and not torch.is_grad_enabled()
    if (scoring and isinstance(attention_mask, CausalBias) and getattr(self, "_qvad_split_prefix", True)
            and self.config._attn_implementation == "sdpa" and self.sliding_window is None):
        # Scoring an unpadded batch: one kernel rotates q and k and attends to the prefix and then
        # to the rows' own keys (qvad.model.accel.kernels.prefix_one_pass), so the prefix is never
        # copied into the rows. The stock rotary (for A/B measurements) rotates first.
        if fused:
            rotation = (cos, sin)
        else:
            query, key = rotary(query, key, cos, sin, fused=False)
            rotation = None
        count("one_pass_calls")
        attended = one_pass_attention(query, key, value, *prefix.read(self.layer_idx), self.scaling, rotation,
                                      last_query, one_pass=getattr(self, "_qvad_one_pass", True))
        return (self.o_proj(attended) if project else attended), None
    if scoring:
        # Scoring: k is rotated straight into the keys buffer after the prefix, v copied once.
        full_key, full_value = prefix.buffers(self.layer_idx, key, value)
        query = rotary_into(query, key, cos, sin, full_key[:, prefix.length:], fused=fused)
        full_value[:, prefix.length:] = value
        key, value = full_key, full_value
    else:
        query, key = rotary(query, key, cos, sin, fused=fused)
        if prefix is not None and prefix.recording:
            prefix.record(self.layer_idx, key, value)
        elif prefix is not None:
            key, value = prefix.extend(self.layer_idx, key, value)
    if last_query:
        # Only the last position's output is wanted (qvad.model.accel.decoder_answer_slot): its query attends
        # to every real key, which is the last row of the mask (no mask when nothing is padded).
        query, tokens = query[:, -1:], 1
        attention_mask = None if isinstance(attention_mask, CausalBias) else attention_mask[..., -1:, :]
    query, key, value = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
    if past_key_values is not None:
        key, value = past_key_values.update(key, value, self.layer_idx)
    attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                                eager_attention_forward)
    attn_output, attn_weights = attention_interface(
        self, query, key, value, attention_mask,
        dropout=0.0 if not self.training else self.attention_dropout,
        scaling=self.scaling,
        sliding_window=self.sliding_window,
        **kwargs,
    )
    attn_output = attn_output.reshape(batch, tokens, -1).contiguous()
    return (self.o_proj(attn_output) if project else attn_output), attn_weights


def enable_fast_attention(model: nn.Module, fused_rotary: bool = True, split_prefix: bool = True,
                          one_pass: bool = True) -> int:
    """Give every ``Qwen2Attention`` in ``model`` this module's forward (idempotent); returns how many.
    Production code calls qvad.model.accel.enable, which checks the installed transformers first.

    For A/B measurements: ``fused_rotary`` False keeps the stock rotary expression on CUDA too;
    ``split_prefix`` False scores unpadded batches through the prefix buffers too; ``one_pass``
    False attends to the prefix and the own keys in two flash calls and a merge
    (qvad.model.accel.kernels.prefix_split).
    """
    return patch_forward(modules_of(model, Qwen2Attention), _attention_forward, _qvad_fused_rotary=fused_rotary,
                         _qvad_split_prefix=split_prefix, _qvad_one_pass=one_pass)


def disable_fast_attention(model: nn.Module) -> int:
    """Restore the stock ``Qwen2Attention.forward`` everywhere in ``model``; returns how many."""
    return restore_forward(modules_of(model, Qwen2Attention), _attention_forward)


def fast_attention_enabled(model: nn.Module) -> bool:
    """Whether every ``Qwen2Attention`` in ``model`` runs :func:`_attention_forward`."""
    layers = modules_of(model, Qwen2Attention)
    return bool(layers) and all(runs_forward(m, _attention_forward) for m in layers)
