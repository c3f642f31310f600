"""The frozen-encoder cache gives the uncached outputs and losses, and refuses an encoder that trains."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qvad.model import accel
from qvad.model.collate import ABCollator
from qvad.model.encoder_cache import cache_frozen_encoder, encoder_cacheable
from qvad.model.loading import load_model_and_processor
from qvad.model.lora import apply_lora
from tests.helpers import voiced_like

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "attention"}


def _batch(processor):
    rng = np.random.default_rng(0)
    clips = [voiced_like(0.5, seed=1), rng.uniform(-0.3, 0.3, 8000).astype(np.float32), voiced_like(0.8, seed=2)]
    return ABCollator(processor, None)([{"audio": c, "label": i % 2} for i, c in enumerate(clips)])


def _frozen(tiny_dir):
    """The tiny model with LoRA on the LM only and the tower frozen (as whisper-tiny trains)."""
    model, processor = load_model_and_processor({"preset": "tiny", "path": str(tiny_dir)}, "cpu", for_training=True)
    model, _ = apply_lora(model, LORA, "qwen2-audio-7b-instruct")  # a preset whose tower is not trained in full
    return model, processor


def test_cached_loss_equals_uncached_and_rows_are_reused(tiny_dir):
    model, processor = _frozen(tiny_dir)
    batch = _batch(processor)
    torch.manual_seed(0)
    plain = model(**batch).loss
    cache = accel.enable(model, "cpu", encoder_cache=True).encoder_cache  # as the train stage switches it on
    assert accel.enable(model, "cpu", encoder_cache=True).encoder_cache is cache  # idempotent: no cache of a cache
    accel.reset_counters()
    first, second = model(**batch).loss, model(**batch).loss
    assert torch.allclose(first, plain, atol=1e-5) and torch.equal(first, second)
    assert (cache.misses, cache.hits) == (3, 3)
    assert (accel.counters()["encoder_cache_misses"], accel.counters()["encoder_cache_hits"]) == (3, 3)
    second.backward()  # gradients still reach the LoRA weights behind the cached encoder
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)


def test_lora_on_the_last_encoder_layer_caches_the_front_and_trains_the_rest(tiny_dir):
    model, processor = load_model_and_processor({"preset": "tiny", "path": str(tiny_dir)}, "cpu", for_training=True)
    model, _ = apply_lora(model, {**LORA, "audio_layers": 1}, "qwen2-audio-7b-instruct")
    audio_lora = {n: p for n, p in model.named_parameters() if "lora_" in n and ".audio_tower." in n}
    assert audio_lora and all(".layers.1." in n for n in audio_lora)  # tiny's tower has 2 layers
    batch = _batch(processor)
    for p in audio_lora.values():  # peft starts B at zero: make the adapted layer differ from the base
        torch.nn.init.normal_(p, std=0.05)
    plain = model(**batch).loss
    cache = cache_frozen_encoder(model)
    assert cache.front == (1, False) and not cache.whole
    first, second = model(**batch).loss, model(**batch).loss
    assert torch.allclose(first, plain, atol=1e-5) and torch.equal(first, second)
    assert (cache.misses, cache.hits) == (3, 3)
    second.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in audio_lora.values())
    stem = model.base_model.model.model.audio_tower.conv1.weight
    assert stem.grad is None  # the cached front stays out of the graph


def test_a_training_encoder_is_not_cached(tiny_dir):
    model, _ = load_model_and_processor({"preset": "tiny", "path": str(tiny_dir)}, "cpu", for_training=True)
    model, _ = apply_lora(model, LORA, "tiny")  # tiny trains its tower in full
    assert not encoder_cacheable(model)
    assert accel.enable(model, "cpu", encoder_cache=True).encoder_cache is None  # the switch leaves it uncached
    with pytest.raises(ValueError, match="trains"):
        cache_frozen_encoder(model)
