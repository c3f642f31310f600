"""The training loss on the answer token, computed without the full-vocabulary logits of every position.

The stock ``Qwen2AudioForConditionalGeneration`` forward multiplies every position's hidden state
by lm_head (``[batch, length, 156k]``: on the 7B about 10 % of a LoRA step's arithmetic and several
GiB of float32 logits) and then ignores all but one position per row (labels are -100 except the
answer, see :class:`qvad.model.collate.ABCollator`). :func:`answer_loss` computes the same mean
cross-entropy from the one hidden state per row that predicts the answer.

With ``shared_prefix`` (default) the prompt tokens every row starts with (those before the audio)
are run once, as one row, and every row attends to their keys/values
(:mod:`qvad.model.accel.shared_prefix`); gradients reach the adapters through them as they would
through each row's own copy. This is exact for deterministic layers. With LoRA dropout > 0 the
prefix tokens of all rows share one dropout draw per step instead of one per row (same
expectation; the stock path draws per row).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from qvad.model import accel
from qvad.model.accel.shared_prefix import (
    MIN_PREFIX_TOKENS,
    PREFIX_KWARG,
    compute_shared_prefix,
    positions_after,
    prefix_mask_mapping,
    prefix_tokens,
    split_shared_prefix,
)
from qvad.model.collate import IGNORE_INDEX


def _unwrap(model: nn.Module) -> nn.Module:
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def answer_loss(model: nn.Module, inputs: Mapping[str, Any], shared_prefix: bool = True) -> torch.Tensor:
    """Mean cross-entropy of each row's answer token, as the stock forward's loss for these labels.

    ``inputs`` is a training batch from :class:`qvad.model.collate.ABCollator` (``labels`` -100
    everywhere but one answer token per row) already on the model's device; ``model`` the plain or
    peft-wrapped Qwen2-Audio model. Call it inside the autocast the Trainer would use.
    """
    base = _unwrap(model)
    audio_model = base.model
    text_model = audio_model.language_model
    input_ids, attention_mask, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
    targets = labels != IGNORE_INDEX
    if not bool((targets.sum(-1) == 1).all()):
        raise ValueError("answer_loss needs exactly one labelled token per row")
    answer_at = targets.int().argmax(-1)
    if bool((answer_at == 0).any()):
        raise ValueError("a row's answer token is its first token: nothing predicts it")
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    predict_at = answer_at - 1
    forward: dict[str, Any] = {"input_features": inputs["input_features"],
                               "feature_attention_mask": inputs["feature_attention_mask"], "use_cache": False}
    rest = None
    if shared_prefix:
        tokens = prefix_tokens(input_ids[0], attention_mask[0], base.config.audio_token_id)
        if len(tokens) >= MIN_PREFIX_TOKENS:
            rest = split_shared_prefix(input_ids, attention_mask, tokens)
    if rest is not None and not accel.enable(text_model, input_ids.device, attention=True).attention:
        rest = None  # the installed transformers is not the one the shared-prefix attention mirrors
    if rest is not None:
        prefix = compute_shared_prefix(text_model, tokens)
        rest_ids, rest_mask = rest
        dtype = text_model.get_input_embeddings().weight.dtype
        forward.update(input_ids=rest_ids, attention_mask=prefix_mask_mapping(text_model.config, rest_mask,
                                                                              prefix.length, dtype, rest_ids.device),
                       position_ids=positions_after(rest_mask, prefix.length), **{PREFIX_KWARG: prefix})
        predict_at = predict_at - prefix.length  # the answer follows the audio, so it sits past the prefix
    else:
        forward.update(input_ids=input_ids, attention_mask=attention_mask)
    hidden = audio_model(**forward).last_hidden_state[rows, predict_at]
    if rest is not None:
        prefix.check_read(text_model.config.num_hidden_layers)
    logits = base.get_output_embeddings()(hidden)
    return nn.functional.cross_entropy(logits.float(), input_ids[rows, answer_at])
