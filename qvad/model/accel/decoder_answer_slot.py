"""The last decoder layer (``Qwen2DecoderLayer``) at the answer slot only, for scoring.

A/B scoring reads one hidden state per row: the last position's, after the final norm
(:mod:`qvad.model.scoring`). Every layer but the last must run all positions, since their keys and
values feed the positions after them. The last layer needs its keys and values at all positions
too, but its query, attention output, ``o_proj`` and MLP only at the last one. Skipping the rest
saves almost 1/L of the language model's work: 3 % on the 7B's 32 layers (measured in
benchmarks/gpu_throughput.py). The values are those of the full layer up to matmul rounding:
the same products, summed in row blocks of another shape.

It applies only to a forward that carries a :class:`~qvad.model.accel.shared_prefix.SharedPrefix`
whose ``answer_slot`` is set and has finished recording, without gradients; anything else
(training, ``generate``, the prefix's own forward) runs the stock layer. The model's
``last_hidden_state`` then has one position per row.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

from qvad.model.accel.counting import count
from qvad.model.accel.decoder_attention import fast_attention_enabled
from qvad.model.accel.patch import patch_forward, restore_forward, runs_forward
from qvad.model.accel.shared_prefix import LAST_QUERY_KWARG, PREFIX_KWARG


def _answer_slot_applies(kwargs: dict[str, Any]) -> bool:
    prefix = kwargs.get(PREFIX_KWARG)
    return (prefix is not None and prefix.answer_slot and not prefix.recording
            and not torch.is_grad_enabled())


# Mirrors transformers.models.qwen2.modeling_qwen2.Qwen2DecoderLayer.forward
def _last_layer_forward(self: Qwen2DecoderLayer, hidden_states: torch.Tensor,
                        attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                        past_key_values: Any = None, use_cache: bool | None = False,
                        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
                        **kwargs: Any) -> torch.Tensor:
    """``Qwen2DecoderLayer.forward`` (transformers 5.23); at the answer slot it returns ``[batch, 1, hidden]``."""
    if not _answer_slot_applies(kwargs):
        return Qwen2DecoderLayer.forward(self, hidden_states=hidden_states, attention_mask=attention_mask,
                                         position_ids=position_ids, past_key_values=past_key_values,
                                         use_cache=use_cache, position_embeddings=position_embeddings, **kwargs)
    count("answer_slot_layers")
    residual = hidden_states[:, -1:]
    attended, _ = self.self_attn(hidden_states=self.input_layernorm(hidden_states), attention_mask=attention_mask,
                                 position_ids=position_ids, past_key_values=past_key_values, use_cache=use_cache,
                                 position_embeddings=position_embeddings, **{LAST_QUERY_KWARG: True}, **kwargs)
    hidden_states = residual + attended
    return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


def _last_layer(text_model: nn.Module) -> Qwen2DecoderLayer:
    layers = getattr(text_model, "layers", None)
    if not layers or not isinstance(layers[-1], Qwen2DecoderLayer):
        raise TypeError(f"{type(text_model).__name__} has no Qwen2 decoder layers")
    return layers[-1]


def enable_answer_slot(text_model: nn.Module) -> None:
    """Give the last decoder layer of ``text_model`` (a Qwen2 model with fast attention) the answer-slot forward."""
    if not fast_attention_enabled(text_model):
        raise RuntimeError("the answer slot needs qvad.model.accel.decoder_attention's attention: enable it first")
    patch_forward([_last_layer(text_model)], _last_layer_forward)


def answer_slot_enabled(text_model: nn.Module) -> bool:
    """Whether the last decoder layer of ``text_model`` runs :func:`_last_layer_forward`."""
    return runs_forward(_last_layer(text_model), _last_layer_forward)


def disable_answer_slot(text_model: nn.Module) -> int:
    """Restore the stock forward of the last decoder layer of ``text_model`` (for A/B measurements)."""
    return restore_forward([_last_layer(text_model)], _last_layer_forward)
