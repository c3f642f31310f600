"""P(speech) per clip from one forward pass: the model's A-vs-B choice at the answer slot.

One left-padded forward puts every row's answer slot at the last position; reading the
last hidden state and multiplying by only the 'A' and 'B' rows of lm_head gives exactly what
constrained ``generate(max_new_tokens=1)`` would choose, without the ``[batch, length, vocab]``
logits tensor (156k columns on the real model). Position ids are computed from the attention
mask as ``generate`` does; RoPE would make the constant shift of left padding harmless anyway,
but this keeps the numbers identical to ``generate``'s.

Every prompt starts with the same tokens (system turn, ``user``, ``Audio 1: <|audio_bos|>``; with
``prompt.audio_position: after_question`` the whole question too): their keys and values are
computed once per call and every row attends to them (:class:`qvad.model.accel.shared_prefix.SharedPrefix`),
so each row only runs its own tokens through the language model. Positions and attention are
those of the full prompt, so the answer is the same function of the inputs. The last decoder
layer then runs only the answer slot, the others add their residuals inside their output
projections on the GPU; these speed-ups live in :mod:`qvad.model.accel`, switched on by one
``accel.enable`` call. While the GPU runs one batch, the next is prepared.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from scipy.special import expit
from torch import nn
from torch.nn.attention.bias import CausalBias
from transformers import PreTrainedModel

from qvad.model import accel
from qvad.model.accel.shared_prefix import (
    MIN_PREFIX_TOKENS,
    PREFIX_KWARG,
    SharedPrefix,
    compute_shared_prefix,
    positions_after,
    prefix_mask_mapping,
    prefix_tokens,
    split_shared_prefix,
)
from qvad.model.collate import ABCollator
from qvad.model.prompt import answer_token_ids

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


def _to_device(value: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tensor to ``device`` without waiting for queued GPU work (pinned, non-blocking)."""
    if value.device == device:
        return value
    if isinstance(value, CausalBias):  # a mask pattern without data (qvad.model.accel.shared_prefix)
        return value
    if device.type == "cuda" and value.device.type == "cpu":
        return value.pin_memory().to(device, non_blocking=True)
    return value.to(device)


def _model_inputs(batch: Mapping[str, torch.Tensor], prefix: SharedPrefix | None, text_config: Any,
                  dtype: torch.dtype, device: torch.device) -> dict[str, Any]:
    """Forward arguments for one left-padded host batch: its rows after the shared prefix when they
    all start with it (positions from ``P``, the prefix's mask columns), else the full prompts."""
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    rest = split_shared_prefix(input_ids, attention_mask, prefix.tokens) if prefix is not None else None
    inputs: dict[str, Any] = {
        "input_features": _to_device(batch["input_features"], device),
        "feature_attention_mask": _to_device(batch["feature_attention_mask"], device),
        "use_cache": False,
    }
    if rest is None:
        inputs.update(input_ids=_to_device(input_ids, device), attention_mask=_to_device(attention_mask, device),
                      position_ids=_to_device(positions_after(attention_mask, 0), device))
        return inputs
    rest_ids, rest_mask = rest
    mask = prefix_mask_mapping(text_config, rest_mask, prefix.length, dtype, device)
    inputs.update(input_ids=_to_device(rest_ids, device),
                  attention_mask={k: _to_device(v, device) for k, v in mask.items()},
                  position_ids=_to_device(positions_after(rest_mask, prefix.length), device),
                  **{PREFIX_KWARG: prefix})
    return inputs


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
    answer_slot: bool = True,
    residual_gemm: bool = True,
) -> np.ndarray:
    """Return float32 ``[n, 2]`` answer logits (column 0 = 'A' = speech, 1 = 'B'), in input order.

    Clips are scored longest first in batches of similar length (less padding, and an
    out-of-memory shows on the first batch), then put back in the caller's order.
    ``feature_device`` is passed to :class:`ABCollator`; None means the model's device (the
    log-mel is then computed on the GPU when the model is there). ``prefix_cache`` computes the
    shared prompt prefix's keys/values once and lets every row attend to them (exact); False runs
    every row's full prompt. ``device_mel`` is passed to :class:`ABCollator`. ``answer_slot``
    (with the prefix) runs the last decoder layer at the answer slot only; False runs it at every
    position (for A/B measurements). ``residual_gemm`` (with the prefix) adds each layer's residuals
    inside its output projections on the GPU; False keeps the separate adds (for A/B measurements).

    Nothing waits for the GPU between batches: token work happens on the host, copies are
    non-blocking, and the logits stay on the device until the last batch is queued (one copy
    back at the end), so the host prepares batch ``i + 1`` while the GPU runs batch ``i``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    base = _unwrap(model)
    weight, bias = _answer_head(base, *answer_token_ids(processor.tokenizer))
    # The two logits in float32 (no copy when the model already is): rounded to bfloat16 at the
    # 7B's logit sizes (|z| of 16 to 32) they move in steps of 0.125, so P(speech) moved in steps
    # of about 0.03 near 0.5, clips tied in the ranking metrics, and two batchings of one clip
    # differed by whole steps (0.036 on the GPU check's bf16 run).
    weight, bias = weight.float(), bias.float() if bias is not None else None
    device = weight.device
    collator = ABCollator(processor, prompt_cfg, feature_device if feature_device is not None else str(device),
                           device_mel=device_mel)
    lm_model = base.base_model
    text_model = lm_model.language_model
    if prefix_cache:
        running = accel.enable(text_model, device, attention=True, answer_slot=answer_slot,
                               residual_gemm=residual_gemm)
        prefix_cache = running.attention  # off only where the installed transformers is not the one it mirrors
    n_layers = text_model.config.num_hidden_layers
    dtype = text_model.get_input_embeddings().weight.dtype
    order = np.argsort([-len(a) for a in audios], kind="stable")
    was_training = model.training
    model.eval()
    indices, logits = [], []
    try:
        with torch.inference_mode():
            prefix = None
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = collator.host_prompt_batch([audios[i] for i in idx])
                if prefix_cache and prefix is None:
                    tokens = prefix_tokens(batch["input_ids"][0], batch["attention_mask"][0], collator.audio_token_id)
                    if len(tokens) >= MIN_PREFIX_TOKENS:
                        prefix = compute_shared_prefix(text_model, tokens.to(device))
                        prefix.tokens = tokens  # host copy: rows are split on the host
                        prefix.answer_slot = answer_slot
                        prefix.residual_gemm = residual_gemm
                    else:
                        prefix_cache = False
                inputs = _model_inputs(batch, prefix, text_model.config, dtype, device)
                hidden = lm_model(**inputs).last_hidden_state[:, -1]
                if PREFIX_KWARG in inputs:
                    inputs[PREFIX_KWARG].check_read(n_layers)
                indices.append(idx)
                logits.append(nn.functional.linear(hidden.float(), weight, bias))
            out = np.empty((len(audios), 2), dtype=np.float32)
            if logits:
                out[np.concatenate(indices)] = torch.cat(logits).cpu().numpy()
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
    **options: bool,
) -> np.ndarray:
    """Return P(speech) per clip: softmax over the 'A' and 'B' logits, float64 ``[n]`` in input order.

    ``options`` are :func:`score_ab_logits`'s keywords (``prefix_cache``, ``device_mel``...)."""
    logits = score_ab_logits(model, processor, audios, prompt_cfg, batch_size, feature_device,
                             **options).astype(np.float64)
    return expit(logits[:, 0] - logits[:, 1])
