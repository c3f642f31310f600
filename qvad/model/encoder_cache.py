"""Reuse a frozen audio encoder's output (or its frozen front's) for a clip it has already encoded.

With the encoder frozen (the whisper-tiny default; the 7B's default too), its output for a clip
never changes during training, yet every epoch and every dev evaluation would recompute it:
on the CPU that is about 80 % of a training step. The cache keys each batch row by a hash of
its mel features and mask, encodes only the rows it has not seen (as one sub-batch) and keeps
the results on the CPU. A row's output can differ from the uncached path only by the last
float bits of batching (tests/test_encoder_cache.py bounds it); for a given order of batches
the bytes are reproducible. Augmented features (SpecAugment) are new content, so they miss.

When only the encoder's last layers train (``lora.audio_layers``), the conv stem and the layers
before them are still a fixed function of the clip: the cache then keeps the hidden states that
enter the first trained layer, and runs the trained layers, the pool and the final norm live.

The cache takes the encoder's forward through qvad.model.accel.patch (the one forward swap), and
is switched on by ``qvad.model.accel.enable(model, device, encoder_cache=True)``, which checks the
installed transformers first; its hits and misses also add to ``qvad.model.accel.counters()``.
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder

from qvad.model.accel.counting import count
from qvad.model.accel.patch import patch_forward, runs_forward
from qvad.model.encoder_truncation import encoder_head, encoder_layers, encoder_stem

DROPOUT_KEYS = ("dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop")
_STEM = ("conv1", "conv2", "embed_positions")


def _trains(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


class FrozenPart(NamedTuple):
    """What of an encoder trains nothing: its conv stem and the first ``layers`` layers, and
    with ``whole`` every layer and the final norm too (its output is then a function of the clip)."""

    layers: int
    whole: bool


def frozen_front(encoder: Qwen2AudioEncoder) -> FrozenPart | None:
    """The encoder's frozen front (:class:`FrozenPart`); None if its conv stem trains."""
    if any(_trains(getattr(encoder, name)) for name in _STEM):
        return None
    trained = [i for i, layer in enumerate(encoder.layers) if _trains(layer)]
    if trained:
        return FrozenPart(trained[0], whole=False)
    return FrozenPart(len(encoder.layers), whole=not _trains(encoder.layer_norm))


class FrozenEncoderCache:
    """What an encoder's forward runs once cached (:func:`_cached_forward`); counts ``hits`` and ``misses`` (rows).

    ``front`` is :func:`frozen_front`'s result: with the whole encoder frozen its output is cached,
    else the input of layer ``front.layers``, and the rest of the encoder runs (and trains) live.
    """

    def __init__(self, encoder: Qwen2AudioEncoder, front: FrozenPart) -> None:
        self.forward = encoder.forward  # the current forward (truncating or stock)
        self.encoder, self.front = encoder, front
        self.store: dict[bytes, torch.Tensor] = {}
        self.hits = self.misses = 0

    @property
    def whole(self) -> bool:
        """Whether the cached rows are the encoder's final output."""
        return self.front.whole

    @staticmethod
    def _key(features: torch.Tensor, mask: torch.Tensor | None) -> bytes:
        h = hashlib.blake2b(features.detach().float().cpu().numpy().tobytes(), digest_size=16)
        if mask is not None:
            h.update(mask.detach().float().cpu().numpy().tobytes())
        return h.digest()

    def _frozen_part(self, features: torch.Tensor, mask: torch.Tensor | None, **kwargs: Any) -> torch.Tensor:
        if self.whole:
            return self.forward(input_features=features, attention_mask=mask, **kwargs).last_hidden_state
        stem = encoder_stem(self.encoder, features)
        return encoder_layers(self.encoder, stem, mask, slice(0, self.front.layers), **kwargs)

    def __call__(self, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 **kwargs: Any) -> BaseModelOutput:
        keys = [self._key(input_features[i], None if attention_mask is None else attention_mask[i])
                for i in range(input_features.shape[0])]
        missing = [i for i, k in enumerate(keys) if k not in self.store and keys.index(k) == i]  # first of duplicates
        if missing:
            idx = torch.tensor(missing, device=input_features.device)
            mask = None if attention_mask is None else attention_mask[idx]
            with torch.no_grad():
                out = self._frozen_part(input_features[idx], mask, **kwargs)
            for row, i in enumerate(missing):
                self.store[keys[i]] = out[row].cpu()
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        count("encoder_cache_misses", len(missing))
        count("encoder_cache_hits", len(keys) - len(missing))
        stacked = torch.stack([self.store[k] for k in keys]).to(input_features.device)
        if self.whole:
            return BaseModelOutput(last_hidden_state=stacked)
        live = encoder_layers(self.encoder, stacked, attention_mask, slice(self.front.layers, None), **kwargs)
        return encoder_head(self.encoder, live)


# Relies on transformers.models.qwen2_audio.modeling_qwen2_audio.Qwen2AudioModel.forward (calls the encoder with the
# features first and attention_mask by keyword)
# Mirrors transformers.models.qwen2_audio.modeling_qwen2_audio.Qwen2AudioEncoder.forward (through
# qvad.model.encoder_truncation's encoder_stem, encoder_layers and encoder_head)
def _cached_forward(self: Qwen2AudioEncoder, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    **kwargs: Any) -> BaseModelOutput:
    """The encoder's forward through its :class:`FrozenEncoderCache` (set by :func:`cache_frozen_encoder`)."""
    return self._qvad_encoder_cache(input_features, attention_mask, **kwargs)


def _uncacheable_because(model: nn.Module) -> str | None:
    """Why no part of the model's audio encoder output is a function of the clip alone, or None."""
    encoders = [m for m in model.modules() if isinstance(m, Qwen2AudioEncoder)]
    if len(encoders) != 1 or frozen_front(encoders[0]) is None:
        return ("the audio encoder trains from its conv stem on (or there is not exactly one): "
                "its output cannot be cached")
    noisy = {k: getattr(encoders[0].config, k, 0.0) for k in DROPOUT_KEYS if getattr(encoders[0].config, k, 0.0)}
    if noisy:
        return f"the audio encoder has dropout {noisy}: its output is not a function of the clip"
    return None


def encoder_cacheable(model: nn.Module) -> bool:
    """Whether :func:`cache_frozen_encoder` accepts ``model``."""
    return _uncacheable_because(model) is None


def cache_frozen_encoder(model: nn.Module) -> FrozenEncoderCache:
    """Put a :class:`FrozenEncoderCache` in front of the model's one audio encoder (the cache it
    already has, if any). Production code calls ``qvad.model.accel.enable(..., encoder_cache=True)``.

    Refuses an encoder whose conv stem trains (e.g. a ``modules_to_save`` copy in use, as the
    tiny preset trains its tower) or that has dropout: its output is then not a function of the
    clip. With LoRA on the last layers only, their input is cached and they run live.
    """
    reason = _uncacheable_because(model)
    if reason is not None:
        raise ValueError(reason)
    encoder = next(m for m in model.modules() if isinstance(m, Qwen2AudioEncoder))
    if runs_forward(encoder, _cached_forward):
        return encoder._qvad_encoder_cache
    cache = FrozenEncoderCache(encoder, frozen_front(encoder))
    patch_forward([encoder], _cached_forward, _qvad_encoder_cache=cache)
    return cache
