"""Model FLOPs per clip, the compute limit and model FLOP utilisation (MFU) of each measured row.

The count is the arithmetic the task needs per clip, whatever a path actually executes:

* the language model runs each row's tokens after the shared prompt prefix (the prefix is one
  row per batch, not counted): ``2 x linear parameters`` per token (q/k/v/o and the MLP of every
  layer; embeddings are lookups) plus attention, ``4 x hidden x context`` per token and layer;
* the audio encoder runs on the truncated mel (``positions`` after the stride-2 conv): its linear
  layers, attention and the two convolutions, and the projector on the pooled positions;
* the answer head: 2 rows of lm_head for the scorer, the full vocabulary at one position per row
  for training; the scorer needs the last layer's keys and values at every position but its
  query, attention, ``o_proj`` and MLP only at the answer slot (counted so);
* training: the language model's forward and its input-gradient backward (frozen base weights
  need no weight gradient: 2x the forward), the encoder forward only (frozen, nothing below it
  trains), and LoRA's own weight gradients (small; counted).

The limit is ``peak / FLOPs per clip``; MFU is ``clips/s x FLOPs per clip / peak``, with ``peak``
the bf16 dense matmul rate measured on this machine (``--peak-tflops`` overrides), so a naive path
that computes 30 s of padding and the full-vocabulary logits gets the same FLOPs per clip and a
low MFU. Recomputation under gradient checkpointing is not useful work and is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ClipShape:
    """Token counts of one clip's prompt: ``prefix`` shared tokens, ``rest`` own tokens, encoder positions."""

    prefix: int
    rest: int
    encoder_positions: int
    audio_tokens: int


def _text_linear_params(text: Any) -> int:
    h, inter, layers = text.hidden_size, text.intermediate_size, text.num_hidden_layers
    head_dim = h // text.num_attention_heads
    kv = text.num_key_value_heads * head_dim
    attn = h * h + 2 * h * kv + h * h  # q, k, v, o
    return layers * (attn + 3 * h * inter)


def _encoder_linear_params(audio: Any) -> int:
    d, ffn, layers = audio.d_model, audio.encoder_ffn_dim, audio.encoder_layers
    return layers * (4 * d * d + 2 * d * ffn)


def encoder_flops(config: Any, positions: int, audio_tokens: int) -> float:
    """Audio tower on ``positions`` conv-2 outputs (2x as many mel frames), then the projector."""
    audio = config.audio_config
    d = audio.d_model
    convs = 2 * audio.num_mel_bins * d * 3 * (2 * positions) + 2 * d * d * 3 * positions
    attention = 4 * d * positions * positions * audio.encoder_layers
    pooled = -(-positions // 2)
    projector = 2 * d * config.text_config.hidden_size * pooled
    return 2 * _encoder_linear_params(audio) * positions + attention + convs + projector


def lm_forward_flops(config: Any, shape: ClipShape) -> float:
    """The language model over a row's ``rest`` tokens, attending to the prefix and causally to itself."""
    text = config.text_config
    linear = 2 * _text_linear_params(text) * shape.rest
    context = sum(shape.prefix + i + 1 for i in range(shape.rest))
    attention = 4 * text.hidden_size * context * text.num_hidden_layers
    return linear + attention


def lora_grad_flops(config: Any, lora_cfg: dict, tokens: int) -> float:
    """LoRA A/B weight gradients (r x (in + out) per adapted linear and token, x2) on the attention."""
    text = config.text_config
    r = int(lora_cfg.get("r", 16))
    h = text.hidden_size
    kv = text.num_key_value_heads * (h // text.num_attention_heads)
    per_token = r * ((h + h) + (h + kv) * 2 + (h + h))
    return 2 * 2 * per_token * text.num_hidden_layers * tokens


def _last_layer_unneeded_flops(config: Any, shape: ClipShape) -> float:
    """What the last layer computes beyond the answer slot: q, o, the MLP and attention at every
    position but the last (its keys and values are needed everywhere)."""
    text = config.text_config
    h, inter = text.hidden_size, text.intermediate_size
    context = sum(shape.prefix + i + 1 for i in range(shape.rest - 1))
    return 2 * (2 * h * h + 3 * h * inter) * (shape.rest - 1) + 4 * h * context


def scorer_flops(config: Any, shape: ClipShape) -> float:
    """A clip's answer: the language model up to the answer slot's last hidden state, the encoder, 2 head rows."""
    return lm_forward_flops(config, shape) - _last_layer_unneeded_flops(config, shape) \
        + encoder_flops(config, shape.encoder_positions, shape.audio_tokens) + 2 * 2 * config.text_config.hidden_size


def train_flops(config: Any, shape: ClipShape, lora_cfg: dict) -> float:
    """One clip of a LoRA step: answer token included in the row (``rest + 1`` tokens)."""
    row = ClipShape(shape.prefix, shape.rest + 1, shape.encoder_positions, shape.audio_tokens)
    text = config.text_config
    head = 2 * text.hidden_size * text.vocab_size
    return 2 * (lm_forward_flops(config, row) + head) + lora_grad_flops(config, lora_cfg, row.rest) \
        + encoder_flops(config, shape.encoder_positions, shape.audio_tokens)


def annotate(row: dict, flops_per_clip: float, peak_tflops: float) -> dict:
    """Add ``tflop_per_clip``, ``limit_clips_per_s`` and ``mfu`` to a measured row (in place)."""
    row["tflop_per_clip"] = round(flops_per_clip / 1e12, 4)
    row["limit_clips_per_s"] = round(peak_tflops * 1e12 / flops_per_clip, 1)
    if "clips_per_s" in row:
        row["mfu"] = round(row["clips_per_s"] * flops_per_clip / (peak_tflops * 1e12), 3)
    return row
