"""A shared prompt prefix, computed once per batch: the rows' keyword, its keys/values and masks.

Every prompt starts with the same tokens (system turn, ``user``, and with
``prompt.audio_position: after_question`` the whole question). Their keys and values are the same
for every row, so they are computed once (one row) and every row attends to them:
:class:`SharedPrefix`, passed to the language model as the keyword ``qvad_prefix``. Unlike a KV
cache it survives gradient checkpointing (transformers drops ``past_key_values`` in checkpointed
layers, a keyword travels with the layer's inputs) and it carries gradients, so training uses it
too. The attention layers that read it are qvad.model.accel.decoder_attention's; this module holds
what the callers (scoring, the train loss) need: the prefix, the rows without it, their
positions and their attention masks.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn
from torch.nn.attention.bias import causal_lower_right
from transformers.models.qwen2.modeling_qwen2 import Qwen2Attention

from qvad.model.accel.counting import count
from qvad.model.accel.patch import modules_of

PREFIX_KWARG = "qvad_prefix"
"""Keyword under which a :class:`SharedPrefix` reaches every attention layer."""

LAST_QUERY_KWARG = "qvad_last_query"
"""Keyword (True) that makes one attention layer return only its last position (a ``[batch, 1,
hidden]`` output; keys and values still cover every position). Passed by qvad.model.accel.decoder_answer_slot."""

UNPROJECTED_KWARG = "qvad_unprojected"
"""Keyword (True) that makes one attention layer return its heads' output before ``o_proj``, for a
caller that runs the projection itself (qvad.model.accel.decoder_residual_gemm adds the residual
inside it)."""


class SharedPrefix:
    """Post-rotary keys/values ``[1, P, kv_heads, dim]`` of ``P`` prompt tokens shared by every row.

    Built by :func:`compute_shared_prefix` (the attention layers record into it), then read by
    every layer of the batch forward, which prepends them to the batch's own keys/values. The
    batch's positions start at ``P`` and its attention mask has ``P`` leading columns
    (:func:`prefix_attention_mask`). ``reads`` counts layers that used it: a model whose attention
    was not replaced would ignore the keyword, so callers check it (:meth:`check_read`).
    """

    def __init__(self, tokens: torch.Tensor) -> None:
        self.tokens = tokens
        self.length = int(tokens.shape[-1])
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.recording = True
        self.reads = 0
        self.answer_slot = False  # scoring sets it: the last layer then runs the last position only
        self.residual_gemm = False  # scoring sets it: residual adds inside the projections

    def record(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> None:
        self.kv[layer] = (key, value)

    def read(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The prefix's keys/values of ``layer``, ``[1, P, kv_heads, dim]``, counted as read."""
        self.reads += 1
        count("prefix_reads")
        return self.kv[layer]

    def extend(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The prefix's keys/values followed by the batch's, ``[batch, P + T, kv_heads, dim]``."""
        prefix_key, prefix_value = self.read(layer)
        rows = key.shape[0]
        return (torch.cat([prefix_key.expand(rows, -1, -1, -1), key], dim=1),
                torch.cat([prefix_value.expand(rows, -1, -1, -1), value], dim=1))

    def buffers(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Empty ``[batch, P + T, kv_heads, dim]`` keys/values with the prefix rows filled in (scoring:
        the batch's own rows are then written in place, with no concatenation).

        They are made anew for every batch. Keeping them per layer, so that the prefix is copied
        once per call, gave no speed on the 7B (1,039 against 1,037 clips/s, question first,
        H200) and took 46 GB more at batch 1,024: its 32 key/value heads make them large.
        """
        prefix_key, prefix_value = self.read(layer)
        rows, tokens = key.shape[:2]
        shape = (rows, self.length + tokens, *key.shape[2:])
        out_key = torch.empty(shape, dtype=key.dtype, device=key.device)
        out_value = torch.empty(shape, dtype=value.dtype, device=value.device)
        out_key[:, : self.length] = prefix_key
        out_value[:, : self.length] = prefix_value
        return out_key, out_value

    def check_read(self, layers: int) -> None:
        """Every one of ``layers`` attention layers must have used the prefix since the last check."""
        if self.reads != layers:
            raise RuntimeError(
                f"{self.reads} of {layers} attention layers read the shared prefix: "
                "qvad.model.accel.enable(model, device, attention=True) first"
            )
        self.reads = 0


@contextlib.contextmanager
def _checkpointing_off(language_model: nn.Module) -> Iterator[None]:
    """Gradient checkpointing off for the layers of ``language_model`` inside the block (the prefix is one row)."""
    layers = [m for m in language_model.modules() if getattr(m, "gradient_checkpointing", False) is True]
    for layer in layers:
        layer.gradient_checkpointing = False
    try:
        yield
    finally:
        for layer in layers:
            layer.gradient_checkpointing = True


# Relies on transformers.models.qwen2_audio.modeling_qwen2_audio.Qwen2AudioModel.forward (keywords reach the text model)
# Relies on transformers.models.qwen2.modeling_qwen2.Qwen2Model.forward (keywords reach every layer; a dict mask is
# used as given)
# Relies on transformers.models.qwen2.modeling_qwen2.Qwen2DecoderLayer.forward (keywords reach its attention)
def compute_shared_prefix(language_model: nn.Module, tokens: torch.Tensor) -> SharedPrefix:
    """Run ``tokens`` (1-D ids) through the text model once and keep every layer's keys/values.

    Under ``torch.inference_mode`` for scoring; with gradients enabled for training (the prefix
    is then part of the graph: its keys/values depend on the adapters, and their gradients reach
    them through every row that attends to them).
    """
    prefix = SharedPrefix(tokens)
    ids = tokens[None]
    with _checkpointing_off(language_model):
        language_model(input_ids=ids, position_ids=torch.arange(prefix.length, device=ids.device)[None],
                       use_cache=False, **{PREFIX_KWARG: prefix})
    layers = len(modules_of(language_model, Qwen2Attention))
    if sorted(prefix.kv) != list(range(layers)):
        raise RuntimeError(f"the shared prefix was recorded by {len(prefix.kv)} of {layers} attention layers: "
                           "qvad.model.accel.enable(model, device, attention=True) first")
    prefix.recording = False
    return prefix


CAUSAL_BIAS_DEVICES = ("cuda",)
"""Devices where an unpadded batch's mask is a CausalBias (flash attention). The CPU keeps the
tensor mask: SDPA materialises a CausalBias there anyway, after slow kernel-eligibility checks."""


def prefix_attention_mask(rest_mask: torch.Tensor, prefix_length: int, attn_implementation: str,
                          dtype: torch.dtype, causal_bias: bool = False) -> torch.Tensor:
    """4-D attention mask of rows that attend to a shared prefix, then causally to their own tokens.

    ``rest_mask`` ``[batch, T]`` marks each row's real tokens after the prefix (left or right
    padding). Query ``i`` sees every prefix key and its own keys ``j <= i`` that are real; a
    padded query still sees the prefix, so no row is fully masked (no NaN). The stock model
    builds the same mask from a 2-D ``[ones(P), rest_mask]`` and a cache of ``P`` tokens.
    Boolean (True = attend) for 'sdpa', additive for 'eager'; with ``causal_bias``, no padding and
    'sdpa', the same pattern as a lower-right ``CausalBias`` (no tensor; SDPA's flash kernel applies it).
    """
    rows, width = rest_mask.shape
    device = rest_mask.device
    if causal_bias and attn_implementation == "sdpa" and bool(rest_mask.all()):
        # No padding: the mask is causal aligned to the lower right; as a CausalBias SDPA runs
        # flash attention (bottom-right causal) instead of a kernel that reads a mask tensor.
        return causal_lower_right(width, prefix_length + width)
    causal = torch.ones((width, width), dtype=torch.bool, device=device).tril()
    own = causal[None] & rest_mask.bool()[:, None, :]
    mask = torch.cat([torch.ones((rows, width, prefix_length), dtype=torch.bool, device=device), own], dim=-1)[:, None]
    if attn_implementation == "sdpa":
        return mask
    if attn_implementation == "eager":
        return torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, torch.finfo(dtype).min)
    raise ValueError(f"shared-prefix attention supports attn_implementation 'sdpa' or 'eager', not {attn_implementation!r}")


MIN_PREFIX_TOKENS = 2
"""Shorter shared prefixes are not worth the extra forward."""


def prefix_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, audio_token_id: int) -> torch.Tensor:
    """The real tokens of one row before its first audio token (1-D); empty if it has none."""
    row = input_ids[attention_mask == 1]
    audio_at = (row == audio_token_id).nonzero()
    return row[: int(audio_at[0, 0])] if len(audio_at) else row[:0]


def split_shared_prefix(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Rows without their leading ``tokens``, padding kept on its side; None if a row does not start with them.

    Works for left padding (scoring) and right padding (training): each row's first real token
    must open the prefix. Column ``c`` of the result is column ``c`` of the row before the
    prefix's start and ``c + P`` after it.
    """
    length = int(tokens.shape[-1])
    rows, width = input_ids.shape
    if length == 0 or width <= length:
        return None
    start = (attention_mask.cumsum(-1) == 0).sum(-1, keepdim=True)
    span = torch.arange(length, device=input_ids.device)[None]
    if not torch.equal(input_ids.gather(1, (start + span).clamp_max(width - 1)),
                       tokens.to(input_ids.device)[None].expand(rows, -1)):
        return None
    if not bool(attention_mask.gather(1, (start + span).clamp_max(width - 1)).all()):
        return None
    cols = torch.arange(width - length, device=input_ids.device)[None]
    source = torch.where(cols < start, cols, cols + length)
    return input_ids.gather(1, source), attention_mask.gather(1, source)


def positions_after(rest_mask: torch.Tensor, offset: int) -> torch.Tensor:
    """Position ids of each row's real tokens, counting from ``offset`` (pads get 0), as ``generate`` does."""
    return (rest_mask.long().cumsum(-1) - 1 + offset).masked_fill(rest_mask == 0, 0)


def prefix_mask_mapping(config: Any, rest_mask: torch.Tensor, prefix_length: int, dtype: torch.dtype,
                        device: torch.device | str) -> dict[str, torch.Tensor]:
    """The language model's ``attention_mask`` argument for a shared-prefix forward on ``device``: a
    prepared mask per layer type (transformers uses a dict as given). Full-attention layers only."""
    kinds = set(getattr(config, "layer_types", None) or ["full_attention"])
    if kinds != {"full_attention"}:
        raise ValueError(f"shared-prefix attention supports full-attention layers only, got {sorted(kinds)}")
    causal_bias = torch.device(device).type in CAUSAL_BIAS_DEVICES
    mask = prefix_attention_mask(rest_mask, prefix_length, config._attn_implementation, dtype, causal_bias)
    return {"full_attention": mask}


