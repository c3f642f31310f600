"""P(speech) per clip from one forward pass: the model's A-vs-B choice at the answer slot.

One left-padded forward puts every row's answer slot at the last position; reading the
last hidden state and multiplying by only the 'A' and 'B' rows of lm_head gives exactly what
constrained ``generate(max_new_tokens=1)`` would choose, without the ``[batch, length, vocab]``
logits tensor (156k columns on the real model). Position ids are computed from the attention
mask as ``generate`` does; RoPE would make the constant shift of left padding harmless anyway,
but this keeps the numbers identical to ``generate``'s.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from scipy.special import expit
from torch import nn
from transformers import PreTrainedModel

from qvad.collate import ABCollator


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


def score_ab_logits(
    model: nn.Module,
    processor: Any,
    audios: Sequence[np.ndarray],
    prompt_cfg: Mapping[str, Any] | None,
    batch_size: int,
    feature_device: str | None = None,
) -> np.ndarray:
    """Return float32 ``[n, 2]`` answer logits (column 0 = 'A' = speech, 1 = 'B'), in input order.

    Clips are scored longest first in batches of similar length (less padding, and an
    out-of-memory shows on the first batch), then put back in the caller's order.
    ``feature_device`` is passed to :class:`ABCollator` (e.g. "cuda" to compute mels on the GPU).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    collator = ABCollator(processor, prompt_cfg, feature_device)
    base = _unwrap(model)
    weight, bias = _answer_head(base, collator.id_speech, collator.id_nonspeech)
    device = weight.device
    order = np.argsort([-len(a) for a in audios], kind="stable")
    out = np.empty((len(audios), 2), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = collator.prompt_batch([audios[i] for i in idx]).to(device)
                attention_mask = batch["attention_mask"]
                position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
                hidden = base.base_model(
                    input_ids=batch["input_ids"],
                    attention_mask=attention_mask,
                    input_features=batch["input_features"],
                    feature_attention_mask=batch["feature_attention_mask"],
                    position_ids=position_ids,
                    use_cache=False,
                ).last_hidden_state[:, -1]
                logits = nn.functional.linear(hidden.to(weight.dtype), weight, bias)
                out[idx] = logits.float().cpu().numpy()
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
) -> np.ndarray:
    """Return P(speech) per clip: softmax over the 'A' and 'B' logits, float64 ``[n]`` in input order."""
    logits = score_ab_logits(model, processor, audios, prompt_cfg, batch_size, feature_device).astype(np.float64)
    return expit(logits[:, 0] - logits[:, 1])
