"""Run Qwen2-Audio's encoder on the batch's valid mel frames only, with identical results.

Why: the processor always pads the mel to 3000 frames (30 s) and the stock encoder refuses any
other length, so for 1-2 s clips ~70 % of inference (and most of the encoder's training cost)
is spent on padding that the attention mask then ignores.

Why it is exact: padded frames only reach valid outputs through (a) attention, where they are
masked as keys, and (b) the convolutions' receptive field at the boundary. With ``F`` valid
frames, the last valid output of conv1 (k=3) -> conv2 (k=3, stride 2) reads mel frames up to
``F + 1``; keeping every frame below ``T >= F + 3`` (``T`` even) keeps those frames real, and only
conv2 outputs past the valid ones see the cut. The mel frames kept are the very frames the
processor computed for the 30 s layout (log-mel normalisation included), so valid positions,
the audio features and hence the logits and the loss are unchanged.

Mechanism, kept inside the model so training, scoring and ``generate`` all take the same path:
a forward pre-hook on :class:`Qwen2AudioModel` slices ``input_features`` and
``feature_attention_mask`` to ``T`` frames (the model then builds its encoder mask at that size),
and each :class:`Qwen2AudioEncoder` gets a forward that accepts any even length up to 3000 and adds
the matching slice of the positional table.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder, Qwen2AudioModel

from qvad.model.accel.guard import stale, warn_stale
from qvad.model.accel.patch import modules_of, patch_forward, restore_forward, runs_forward

CONV_MARGIN_FRAMES = 3
"""Frames kept past the last valid one so the conv stack's boundary outputs stay exact (see module doc)."""

DEFAULT_MULTIPLE = 2
"""Frames are kept up to the next even count: conv2 halves them, so this is the least padding. A
coarser rounding (20 used to be the default) gives fewer distinct shapes but costs compute: on
the 7B's scorer 2.8 % of throughput, question first (benchmarks/results/
gpu_throughput_7b_h200_truncate_multiple_2.json)."""

_HOOK_ATTR = "_qvad_truncation_hook"


def full_frames(encoder: Qwen2AudioEncoder) -> int:
    """The encoder's fixed input length (3000 for Qwen2-Audio): positions x conv strides."""
    return encoder.config.max_source_positions * encoder.conv1.stride[0] * encoder.conv2.stride[0]


def _check_multiple(multiple: int) -> None:
    """Rounding must be even: conv2 halves the length and the model sizes its mask as ``(T - 2) // 2 + 1``."""
    if not isinstance(multiple, int) or multiple <= 0 or multiple % 2:
        raise ValueError(f"truncation multiple must be a positive even number of frames, got {multiple!r}")


def truncated_frames(feature_attention_mask: torch.Tensor, multiple: int, max_frames: int) -> int:
    """Frames to keep for a batch: longest valid length + margin, rounded up to ``multiple``, capped.

    Rounding keeps the number of distinct shapes small (kernel caches, compiled graphs).
    """
    _check_multiple(multiple)
    longest = int(feature_attention_mask.sum(-1).max())
    needed = longest + CONV_MARGIN_FRAMES
    return min(max_frames, -(-needed // multiple) * multiple)


def encoder_stem(self: Qwen2AudioEncoder, input_features: torch.Tensor) -> torch.Tensor:
    """The conv stem and the matching slice of the positional table: the first layer's input.

    Accepts any even frame count <= 3000. One difference from the stock forward, in layout only:
    the hidden states are made dense after the conv stem's permute. Left as the permuted view,
    every layer inherits its frame-minor strides, so each LayerNorm copies its input and each
    residual add runs the strided kernel: on the 7B's encoder that was 5 % of the scorer's GPU
    time (H200 profile by aten op). The values are the same.
    """
    n_frames = input_features.shape[-1]
    if n_frames > full_frames(self) or n_frames % 2:
        raise ValueError(f"encoder input must be an even number of frames <= {full_frames(self)}, got {n_frames}")
    inputs_embeds = nn.functional.gelu(self.conv1(input_features))
    inputs_embeds = nn.functional.gelu(self.conv2(inputs_embeds))
    inputs_embeds = inputs_embeds.permute(0, 2, 1).contiguous()
    hidden_states = inputs_embeds + self.embed_positions.weight[: inputs_embeds.shape[1]]
    return nn.functional.dropout(hidden_states, p=self.dropout, training=self.training)


def encoder_layers(self: Qwen2AudioEncoder, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None,
                   layers: slice = slice(None), **kwargs: Any) -> torch.Tensor:
    """Run the encoder layers in ``layers`` (all by default), with the stock layerdrop."""
    for encoder_layer in self.layers[layers]:
        if self.training and self.layerdrop > 0.0 and torch.rand([]) < self.layerdrop:
            continue
        hidden_states = encoder_layer(hidden_states, attention_mask=attention_mask, **kwargs)
    return hidden_states


def encoder_head(self: Qwen2AudioEncoder, hidden_states: torch.Tensor) -> BaseModelOutput:
    """Qwen2-Audio's 2x average pool, then the final layer norm."""
    hidden_states = self.avg_pooler(hidden_states.permute(0, 2, 1)).permute(0, 2, 1)
    return BaseModelOutput(last_hidden_state=self.layer_norm(hidden_states))


# Mirrors transformers.models.qwen2_audio.modeling_qwen2_audio.Qwen2AudioEncoder.forward (with encoder_stem,
# encoder_layers and encoder_head)
# Relies on transformers.models.qwen2_audio.modeling_qwen2_audio.Qwen2AudioEncoderLayer.forward (its hidden_states
# first, attention_mask by keyword)
def _forward_valid_frames(
    self: Qwen2AudioEncoder,
    input_features: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> BaseModelOutput:
    """Qwen2AudioEncoder.forward for any even frame count <= 3000: the positional table is sliced.

    Mirrors transformers 5.23's encoder forward step for step (the equality tests against the
    stock 30 s path guard against drift); hidden-state/attention capture is not supported.
    """
    if kwargs.get("output_hidden_states") or kwargs.get("output_attentions"):
        raise NotImplementedError("the truncating encoder does not return hidden states or attentions")
    hidden_states = encoder_layers(self, encoder_stem(self, input_features), attention_mask, **kwargs)
    return encoder_head(self, hidden_states)


# Relies on transformers.models.qwen2_audio.modeling_qwen2_audio.Qwen2AudioModel.forward (input_features and
# feature_attention_mask by keyword; the encoder mask sized from the features it is given)
def _make_pre_hook(multiple: int, max_frames: int):
    """Build the Qwen2AudioModel pre-hook that cuts the mel batch to its valid frames."""

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if len(args) > 1:
            raise TypeError("encoder truncation needs input_features passed by keyword")
        features = kwargs.get("input_features")
        if features is None:
            return None
        mask = kwargs.get("feature_attention_mask")
        if mask is None:
            raise ValueError("input_features without feature_attention_mask: the valid length is unknown")
        keep = truncated_frames(mask, multiple, max_frames)
        if keep >= features.shape[-1]:
            return None
        return args, {**kwargs, "input_features": features[..., :keep], "feature_attention_mask": mask[:, :keep]}

    return hook


def enable_encoder_truncation(model: nn.Module, multiple: int = DEFAULT_MULTIPLE) -> None:
    """Make every Qwen2-Audio encoder in ``model`` run on valid frames only (idempotent).

    Works on a plain model or a peft-wrapped one: all encoders are patched, including peft's
    trainable copies in ``modules_to_save``. Call it again after wrapping to be sure. With another
    transformers than the one its mirror was written against (qvad.model.accel.guard) it warns and
    leaves the stock 30 s path, which gives the same results.
    """
    _check_multiple(multiple)
    found = stale(["qvad.model.encoder_truncation"])
    if found:
        warn_stale(found)
        return
    encoders = modules_of(model, Qwen2AudioEncoder)
    models = [m for m in model.modules() if isinstance(m, Qwen2AudioModel)]
    if not encoders or not models:
        raise TypeError(f"{type(model).__name__} holds no Qwen2AudioModel / Qwen2AudioEncoder to truncate")
    for encoder in encoders:
        if "forward" in encoder.__dict__ and not runs_forward(encoder, _forward_valid_frames):
            # e.g. an accelerate dispatch hook: replacing it would silently drop device moves.
            raise RuntimeError("the audio encoder's forward is already wrapped; cannot enable truncation")
    patch_forward(encoders, _forward_valid_frames)
    max_frames = full_frames(encoders[0])
    for qwen_model in models:
        old = getattr(qwen_model, _HOOK_ATTR, None)
        if old is not None:
            old.remove()
        handle = qwen_model.register_forward_pre_hook(_make_pre_hook(multiple, max_frames), with_kwargs=True)
        setattr(qwen_model, _HOOK_ATTR, handle)


def configured_multiple(model_cfg: Mapping[str, Any]) -> int:
    """params.yaml's ``model.truncate_multiple`` (DEFAULT_MULTIPLE when absent), checked, naming the key."""
    value = model_cfg.get("truncate_multiple", DEFAULT_MULTIPLE)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % 2:
        raise ValueError(f"model.truncate_multiple must be a positive even number of frames, got {value!r}")
    return value


def truncate_as_configured(model: nn.Module, model_cfg: Mapping[str, Any]) -> None:
    """Encoder truncation as params.yaml's ``model`` section sets it (on, at DEFAULT_MULTIPLE, unless
    ``truncate_encoder`` is false); the one place every loader and the train stage call."""
    if model_cfg.get("truncate_encoder", True):
        enable_encoder_truncation(model, configured_multiple(model_cfg))


def disable_encoder_truncation(model: nn.Module) -> None:
    """Restore the stock 30 s encoder path everywhere in ``model`` (idempotent)."""
    restore_forward(modules_of(model, Qwen2AudioEncoder), _forward_valid_frames)
    for module in model.modules():
        if isinstance(module, Qwen2AudioModel) and getattr(module, _HOOK_ATTR, None) is not None:
            getattr(module, _HOOK_ATTR).remove()
            setattr(module, _HOOK_ATTR, None)

