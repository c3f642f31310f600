"""Reuse a frozen audio encoder's output for a clip it has already encoded.

With the encoder frozen (the whisper-tiny default; the 7B's default too), its output for a clip
never changes during training, yet every epoch and every dev evaluation would recompute it:
on the CPU that is about 80 % of a training step. The cache keys each batch row by a hash of
its mel features and mask, encodes only the rows it has not seen (as one sub-batch) and keeps
the results on the CPU. A row's output can differ from the uncached path only by the last
float bits of batching (tests/test_encoder_cache.py bounds it); for a given order of batches
the bytes are reproducible. Augmented features (SpecAugment) are new content, so they miss.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder

DROPOUT_KEYS = ("dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop")


class FrozenEncoderCache:
    """Stands in for a frozen encoder's ``forward``; counts ``hits`` and ``misses`` (rows)."""

    def __init__(self, encoder: Qwen2AudioEncoder) -> None:
        self.forward = encoder.forward  # the current forward (truncating or stock)
        self.store: dict[bytes, torch.Tensor] = {}
        self.hits = self.misses = 0

    @staticmethod
    def _key(features: torch.Tensor, mask: torch.Tensor | None) -> bytes:
        h = hashlib.blake2b(features.detach().float().cpu().numpy().tobytes(), digest_size=16)
        if mask is not None:
            h.update(mask.detach().float().cpu().numpy().tobytes())
        return h.digest()

    def __call__(self, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 **kwargs: Any) -> BaseModelOutput:
        keys = [self._key(input_features[i], None if attention_mask is None else attention_mask[i])
                for i in range(input_features.shape[0])]
        missing = [i for i, k in enumerate(keys) if k not in self.store and keys.index(k) == i]  # first of duplicates
        if missing:
            idx = torch.tensor(missing, device=input_features.device)
            mask = None if attention_mask is None else attention_mask[idx]
            with torch.no_grad():
                out = self.forward(input_features[idx], mask, **kwargs).last_hidden_state
            for row, i in enumerate(missing):
                self.store[keys[i]] = out[row].cpu()
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        stacked = torch.stack([self.store[k] for k in keys]).to(input_features.device)
        return BaseModelOutput(last_hidden_state=stacked)


def encoder_trains(model: nn.Module) -> bool:
    """Whether any audio encoder in ``model`` has a parameter that trains."""
    return any(p.requires_grad for m in model.modules() if isinstance(m, Qwen2AudioEncoder) for p in m.parameters())


def _uncacheable_because(model: nn.Module) -> str | None:
    """Why the model's audio encoder output is not a function of the clip alone, or None."""
    encoders = [m for m in model.modules() if isinstance(m, Qwen2AudioEncoder)]
    if encoder_trains(model) or len(encoders) != 1:
        return "the audio encoder trains (or there is not exactly one): its output cannot be cached"
    noisy = {k: getattr(encoders[0].config, k, 0.0) for k in DROPOUT_KEYS if getattr(encoders[0].config, k, 0.0)}
    if noisy:
        return f"the audio encoder has dropout {noisy}: its output is not a function of the clip"
    return None


def encoder_cacheable(model: nn.Module) -> bool:
    """Whether :func:`cache_frozen_encoder` accepts ``model``."""
    return _uncacheable_because(model) is None


def cache_frozen_encoder(model: nn.Module) -> FrozenEncoderCache:
    """Put a :class:`FrozenEncoderCache` in front of the model's one audio encoder.

    Refuses an encoder that trains (any parameter with ``requires_grad``, e.g. LoRA or a
    ``modules_to_save`` copy in use) or has dropout, whose output is then not a function of the clip.
    """
    reason = _uncacheable_because(model)
    if reason is not None:
        raise ValueError(reason)
    encoder = next(m for m in model.modules() if isinstance(m, Qwen2AudioEncoder))
    cache = FrozenEncoderCache(encoder)
    encoder.forward = cache
    return cache
