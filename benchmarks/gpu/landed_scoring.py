# The scorer as landed at commit b918135 (qvad/model/scoring.py there), kept verbatim below this
# header so the benchmark can time it in the same run as the current one. It needs the stock
# Qwen2Attention forward (qvad.model.accel.disable(model, "attention")) to be what it was.
"""P(speech) per clip from one forward pass: the model's A-vs-B choice at the answer slot.

One left-padded forward puts every row's answer slot at the last position; reading the
last hidden state and multiplying by only the 'A' and 'B' rows of lm_head gives exactly what
constrained ``generate(max_new_tokens=1)`` would choose, without the ``[batch, length, vocab]``
logits tensor (156k columns on the real model). Position ids are computed from the attention
mask as ``generate`` does; RoPE would make the constant shift of left padding harmless anyway,
but this keeps the numbers identical to ``generate``'s.

Every prompt starts with the same tokens (system turn, ``user``, ``Audio 1: <|audio_bos|>``):
their keys and values are computed once per call and reused for every row (a KV cache), so
each row only runs its audio and question tokens through the language model (~a quarter fewer
tokens with the default prompt). Positions and attention are those of the full prompt, so the
answer is the same function of the inputs. While the GPU runs one batch, the next is prepared.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from scipy.special import expit
from torch import nn
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer

from qvad.model.collate import ABCollator
from qvad.model.prompt import answer_token_ids

MIN_PREFIX_TOKENS = 2
"""Shorter shared prefixes are not worth a cache."""


def _unwrap(model: nn.Module) -> PreTrainedModel:
    """The transformers model under an optional peft wrapper (LoRA layers stay injected in it)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _answer_head(model: PreTrainedModel, id_a: int, id_b: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The two lm_head rows (and bias) for 'A' and 'B'; refuses heads whose weight is not plain."""
    head = model.get_output_embeddings()
    if type(head) is not nn.Linear:
        raise TypeError(
            f"lm_head is {type(head).__name__}; two-row scoring needs a plain nn.Linear "
            "(do not quantize lm_head or give it an adapter)"
        )
    rows = torch.tensor([id_a, id_b], device=head.weight.device)
    bias = head.bias[rows] if head.bias is not None else None
    return head.weight[rows], bias


def _position_ids(attention_mask: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Positions of the real tokens (0.. per row, after ``offset``), as generate computes them."""
    return (attention_mask.long().cumsum(-1) - 1 + offset).masked_fill(attention_mask == 0, 0)


class _SharedPrefixLayer(DynamicLayer):
    """One layer's prefix keys/values ``[1, heads, P, dim]``, shared by every row of a batch.

    ``update`` hands attention the prefix followed by the batch's own keys/values and keeps
    nothing: the scorer runs one forward per batch, so the concatenation (one per layer) is
    freed right after that layer's attention instead of growing a cache for the whole model.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.lazy_initialization(keys, values)
        self.keys, self.values = keys, values

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        rows = key_states.shape[0]
        return (torch.cat([self.keys.expand(rows, -1, -1, -1), key_states], dim=-2),
                torch.cat([self.values.expand(rows, -1, -1, -1), value_states], dim=-2))


class _PromptPrefix:
    """Keys/values of the prompt tokens before the first audio token, shared by every row."""

    def __init__(self, lm_model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 audio_token_id: int) -> None:
        row = input_ids[0][attention_mask[0] == 1]
        audio_at = (row == audio_token_id).nonzero()
        self.length = int(audio_at[0, 0]) if len(audio_at) else 0
        self.tokens = row[: self.length]
        self.kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        if self.length < MIN_PREFIX_TOKENS:
            return
        ids = self.tokens[None]
        out = lm_model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            position_ids=torch.arange(self.length, device=ids.device)[None],
            use_cache=True,
        )
        cache = out.past_key_values
        self.kv = [(layer.keys, layer.values) for layer in cache.layers]

    def split(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Rows without the shared prefix, still left-padded; None if a row does not start with it."""
        if not self.kv:
            return None
        n_rows, width = input_ids.shape
        pads = width - attention_mask.sum(-1, keepdim=True)
        span = torch.arange(self.length, device=input_ids.device)[None]
        if not torch.equal(input_ids.gather(1, pads + span), self.tokens[None].expand(n_rows, -1)):
            return None
        cols = torch.arange(width - self.length, device=input_ids.device)[None]
        source = torch.where(cols < pads, cols, cols + self.length)
        return input_ids.gather(1, source), attention_mask.gather(1, source)

    def cache(self) -> DynamicCache:
        """A cache that presents the prefix to every layer (see :class:`_SharedPrefixLayer`)."""
        cache = DynamicCache()
        cache.layers = [_SharedPrefixLayer(k, v) for k, v in self.kv]
        return cache


def _last_hidden(lm_model: nn.Module, batch: Mapping[str, torch.Tensor],
                 prefix: _PromptPrefix | None) -> torch.Tensor:
    """Final hidden state at every row's last position (the answer slot)."""
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    kwargs: dict[str, Any] = {"use_cache": False}
    rest = prefix.split(input_ids, attention_mask) if prefix is not None else None
    if rest is not None:
        input_ids, rest_mask = rest
        attention_mask = torch.cat(
            [torch.ones((len(input_ids), prefix.length), dtype=rest_mask.dtype, device=rest_mask.device), rest_mask], 1
        )
        kwargs = {"use_cache": True, "past_key_values": prefix.cache()}
        position_ids = _position_ids(rest_mask, prefix.length)
    else:
        position_ids = _position_ids(attention_mask)
    return lm_model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        input_features=batch["input_features"],
        feature_attention_mask=batch["feature_attention_mask"],
        position_ids=position_ids,
        **kwargs,
    ).last_hidden_state[:, -1]


def score_ab_logits(
    model: nn.Module,
    processor: Any,
    audios: Sequence[np.ndarray],
    prompt_cfg: Mapping[str, Any] | None,
    batch_size: int,
    feature_device: str | None = None,
    *,
    prefix_cache: bool = True,
    device_mel: bool = True,
) -> np.ndarray:
    """Return float32 ``[n, 2]`` answer logits (column 0 = 'A' = speech, 1 = 'B'), in input order.

    Clips are scored longest first in batches of similar length (less padding, and an
    out-of-memory shows on the first batch), then put back in the caller's order.
    ``feature_device`` is passed to :class:`ABCollator`; None means the model's device (the
    log-mel is then computed on the GPU when the model is there). ``prefix_cache`` reuses the
    shared prompt prefix's keys/values across rows (exact); False runs every row's full prompt.
    ``device_mel`` is passed to :class:`ABCollator`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    base = _unwrap(model)
    weight, bias = _answer_head(base, *answer_token_ids(processor.tokenizer))
    device = weight.device
    collator = ABCollator(processor, prompt_cfg, feature_device if feature_device is not None else str(device),
                           device_mel=device_mel)
    lm_model = base.base_model
    order = np.argsort([-len(a) for a in audios], kind="stable")
    out = np.empty((len(audios), 2), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            prefix = None
            pending: tuple[np.ndarray, torch.Tensor] | None = None
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = collator.prompt_batch([audios[i] for i in idx]).to(device)
                if prefix_cache and prefix is None:
                    prefix = _PromptPrefix(lm_model, batch["input_ids"], batch["attention_mask"],
                                           collator.audio_token_id)
                hidden = _last_hidden(lm_model, batch, prefix)
                logits = nn.functional.linear(hidden.to(weight.dtype), weight, bias)
                # Collect the previous batch only now: this one is queued on the GPU already.
                if pending is not None:
                    out[pending[0]] = pending[1].float().cpu().numpy()
                pending = (idx, logits)
            if pending is not None:
                out[pending[0]] = pending[1].float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def score_ab(
    model: nn.Module,
    processor: Any,
    audios: Sequence[np.ndarray],
    prompt_cfg: Mapping[str, Any] | None,
    batch_size: int,
    feature_device: str | None = None,
    *,
    prefix_cache: bool = True,
    device_mel: bool = True,
) -> np.ndarray:
    """Return P(speech) per clip: softmax over the 'A' and 'B' logits, float64 ``[n]`` in input order."""
    logits = score_ab_logits(model, processor, audios, prompt_cfg, batch_size, feature_device,
                             prefix_cache=prefix_cache, device_mel=device_mel).astype(np.float64)
    return expit(logits[:, 0] - logits[:, 1])
