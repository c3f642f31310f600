"""The decoder layers' (``Qwen2DecoderLayer``, all but the last) residual adds inside their output
projections' matrix products, for scoring.

A Qwen2 decoder layer adds its input to ``o_proj``'s output, and that sum to ``down_proj``'s: two
elementwise kernels per layer, each reading two ``[tokens, hidden]`` tensors and writing a third
(about 2 % of the 7B scorer's GPU time on an H200, benchmarks/results). cuBLAS adds a matrix it is
given to the product in the epilogue of the same kernel (``C = A @ B + C``), so
``residual.addmm_(x, weight.T)`` computes the sum with no kernel of its own. The sum is rounded
to bfloat16 once instead of twice (the product, then the sum): it can differ from the stock
layer's by one bfloat16 ulp of the sum, and the scores stay within the scorer's tolerances of the
plain path (checked on the GPU by tests/test_accel.py and benchmarks/gpu_throughput.py).

Only scoring takes it: a forward that carries a recorded
:class:`~qvad.model.accel.shared_prefix.SharedPrefix` whose ``residual_gemm`` is set, through this
project's attention and a stock or fused SiLU MLP, without gradients, on CUDA, with plain bias-free
``nn.Linear`` projections (a LoRA-wrapped ``o_proj`` keeps ``residual + o_proj(x)``). The layer's
input is overwritten, which is safe there: the scorer builds the embeddings itself and reads only
the last layer's output. Everything else (training, ``generate``, the prefix's own forward, the
CPU, whose bytes the pipeline pins) runs the stock layer. The last layer keeps
qvad.model.accel.decoder_answer_slot's forward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer, Qwen2MLP

from qvad.model.accel.counting import count
from qvad.model.accel.decoder_attention import _attention_forward
from qvad.model.accel.decoder_mlp import _mlp_forward, gated_activation
from qvad.model.accel.patch import patch_forward, restore_forward, runs_forward
from qvad.model.accel.shared_prefix import PREFIX_KWARG, UNPROJECTED_KWARG


def add_into(residual: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``residual += x @ weight.T`` as one matrix product over the flattened rows; returns ``residual``."""
    residual.view(-1, residual.shape[-1]).addmm_(x.reshape(-1, x.shape[-1]), weight.t())
    return residual


def add_linear(residual: torch.Tensor, x: torch.Tensor, linear: nn.Module) -> torch.Tensor:
    """``residual + linear(x)``: written into ``residual`` by one GEMM on CUDA for a plain bias-free
    linear of the same dtype, without gradients; elsewhere the stock expression."""
    if (type(linear) is nn.Linear and linear.bias is None and residual.is_cuda and residual.is_contiguous()
            and residual.dtype == x.dtype == linear.weight.dtype and not torch.is_grad_enabled()):
        count("residual_gemm_adds")
        return add_into(residual, x, linear.weight)
    return residual + linear(x)


def _applies(layer: Qwen2DecoderLayer, kwargs: dict[str, Any]) -> bool:
    prefix = kwargs.get(PREFIX_KWARG)
    mlp = layer.mlp
    return (prefix is not None and prefix.residual_gemm and not prefix.recording and not torch.is_grad_enabled()
            and runs_forward(layer.self_attn, _attention_forward)
            and type(mlp) is Qwen2MLP and mlp.config.hidden_act == "silu"
            and ("forward" not in mlp.__dict__ or runs_forward(mlp, _mlp_forward)))


# Mirrors transformers.models.qwen2.modeling_qwen2.Qwen2DecoderLayer.forward
# Mirrors transformers.models.qwen2.modeling_qwen2.Qwen2MLP.forward (through decoder_mlp.gated_activation)
def _layer_forward(self: Qwen2DecoderLayer, hidden_states: torch.Tensor,
                   attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                   past_key_values: Any = None, use_cache: bool | None = False,
                   position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
                   **kwargs: Any) -> torch.Tensor:
    """``Qwen2DecoderLayer.forward`` (transformers 5.23) with both residual adds in the projections."""
    if not _applies(self, kwargs):
        return Qwen2DecoderLayer.forward(self, hidden_states=hidden_states, attention_mask=attention_mask,
                                         position_ids=position_ids, past_key_values=past_key_values,
                                         use_cache=use_cache, position_embeddings=position_embeddings, **kwargs)
    attended, _ = self.self_attn(hidden_states=self.input_layernorm(hidden_states), attention_mask=attention_mask,
                                 position_ids=position_ids, past_key_values=past_key_values, use_cache=use_cache,
                                 position_embeddings=position_embeddings, **{UNPROJECTED_KWARG: True}, **kwargs)
    hidden_states = add_linear(hidden_states, attended, self.self_attn.o_proj)
    activation = gated_activation(self.mlp, self.post_attention_layernorm(hidden_states))
    return add_linear(hidden_states, activation, self.mlp.down_proj)


def _inner_layers(text_model: nn.Module) -> list[Qwen2DecoderLayer]:
    layers = getattr(text_model, "layers", None)
    if not layers or not all(isinstance(layer, Qwen2DecoderLayer) for layer in layers):
        raise TypeError(f"{type(text_model).__name__} has no Qwen2 decoder layers")
    return list(layers[:-1])


def enable_residual_gemm(text_model: nn.Module) -> int:
    """Give every decoder layer of ``text_model`` but the last this module's forward; returns how many."""
    return patch_forward(_inner_layers(text_model), _layer_forward)


def disable_residual_gemm(text_model: nn.Module) -> int:
    """Restore the stock decoder-layer forward (for A/B measurements); returns how many."""
    return restore_forward(_inner_layers(text_model), _layer_forward)


def residual_gemm_enabled(text_model: nn.Module) -> bool:
    """Whether every decoder layer of ``text_model`` but the last runs :func:`_layer_forward`."""
    layers = _inner_layers(text_model)
    return bool(layers) and all(runs_forward(layer, _layer_forward) for layer in layers)
