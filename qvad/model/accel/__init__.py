"""GPU speed-ups of Qwen2-Audio, kept apart from the model code, behind one switch.

Every speed-up computes what the stock transformers code computes (bit for bit, or within the
scorer's tolerances where a sum is rounded once instead of twice; each is tested against the
stock path in tests/test_accel*.py). Layout, by the layer each one serves:

- ``shared_prefix``: the prompt prefix every row shares, run once per batch; its keyword, masks
  and row splitting (scoring and the train loss).
- ``decoder_attention``: ``Qwen2Attention`` reading the shared prefix, with the fused rotary.
- ``decoder_answer_slot``: the last ``Qwen2DecoderLayer`` at the answer slot only (scoring).
- ``decoder_residual_gemm``: the other ``Qwen2DecoderLayer`` s, residual adds inside the output
  projections' GEMMs (scoring, CUDA).
- ``decoder_mlp``: ``Qwen2MLP`` with the SiLU-mul kernel (inference, CUDA).
- ``decoder_norm``: ``Qwen2RMSNorm`` through torch's fused kernel (accelerators).
- ``encoder_attention``: ``Qwen2AudioAttention`` on strided views instead of copies (accelerators).
- ``kernels/``: the Triton kernels (rotary, one-pass and split prefix attention, SiLU-mul, bf16
  rounding); they swap no forward.
- ``patch``: the one per-instance forward swap; every forward qvad replaces (these, the encoder
  truncation, the frozen-encoder cache) goes through it.
- ``guard``: which transformers code each mirrors, checked when they are switched on.
- ``counting``: how many times each fast path ran (read through :func:`counters`).

The switch: :func:`enable` ``(model, device, attention=..., ...)`` installs the named speed-ups
and returns :class:`Enabled`, what now runs. Loading (``qvad.model.loading``), scoring, the train
loss and the train and optimize_prompt stages (the frozen-encoder cache) call it and nothing else;
:func:`disable` restores stock forwards (tests, A/B benchmarks). The per-module functions it
calls stay public for A/B options (e.g. ``decoder_attention.enable_fast_attention(model,
one_pass=False)``), but they skip the guard.

The guard: several forwards mirror transformers 5.23 code step for step. :func:`enable` checks
the installed transformers first (``guard.stale``: the pinned version, else a fingerprint of each
mirrored stock function's source); a speed-up whose stock code changed stays off, with ONE
``warnings.warn`` naming the module and the stock functions that differ, and the stock path runs.
Not an error: the stock path is the reference, so results stay right and only speed is lost.
tests/test_accel_guard.py fails on a transformers upgrade and names what to re-check.

The counters: :func:`counters` returns how often each fast path ran in this process (layers that
read a shared prefix, kernel launches, answer-slot layers, frozen-encoder cache hits and misses;
``counting.NAMES`` says what each counts), :func:`reset_counters` zeroes them. A harness that
runs a stage in-process can check, e.g., ``counters()["prefix_reads"] > 0`` after evaluate and
``counters()["encoder_cache_hits"] > 0`` after train.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.models.qwen2.modeling_qwen2 import Qwen2Model

from qvad.model.accel import decoder_answer_slot, decoder_attention, decoder_mlp, decoder_norm, decoder_residual_gemm
from qvad.model.accel.encoder_attention import disable_strided_encoder_attention, use_strided_encoder_attention
from qvad.model.accel.counting import counters, reset_counters
from qvad.model.accel.guard import stale, warn_stale
from qvad.model.accel.patch import modules_of

__all__ = ["Enabled", "counters", "disable", "enable", "reset_counters"]

GUARDED: dict[str, tuple[str, ...]] = {
    "attention": ("qvad.model.accel.shared_prefix", "qvad.model.accel.decoder_attention",
                  "qvad.model.accel.kernels.rotary"),
    "answer_slot": ("qvad.model.accel.decoder_answer_slot",),
    "residual_gemm": ("qvad.model.accel.decoder_residual_gemm",),
    "mlp": ("qvad.model.accel.decoder_mlp",),
    "rms_norm": ("qvad.model.accel.decoder_norm",),
    "encoder_attention": ("qvad.model.accel.encoder_attention",),
    "encoder_cache": ("qvad.model.encoder_cache",),
}
"""For each speed-up, the modules whose mirrored transformers code the guard checks."""

NEEDS_ATTENTION = ("answer_slot", "residual_gemm")
"""Speed-ups that run only behind the shared-prefix attention."""

ACCELERATOR_ONLY = ("mlp", "rms_norm", "encoder_attention")
"""Installed off the CPU only: on the CPU their kernels would not run (mlp) or would round or pick
kernels differently from the stock code (rms_norm, encoder_attention), and the CPU pipeline's bytes
must not depend on them."""


@dataclass(frozen=True)
class Enabled:
    """What :func:`enable` was asked for and now runs (False: not asked, not applicable, or left off
    by the guard). ``encoder_cache`` is the model's frozen-encoder cache, or None."""

    attention: bool = False
    answer_slot: bool = False
    residual_gemm: bool = False
    mlp: bool = False
    rms_norm: bool = False
    encoder_attention: bool = False
    encoder_cache: Any = None


def _text_models(model: nn.Module) -> list[nn.Module]:
    return modules_of(model, Qwen2Model)


def enable(model: nn.Module, device: str | torch.device, *, attention: bool = False, answer_slot: bool = False,
           residual_gemm: bool = False, mlp: bool = False, rms_norm: bool = False, encoder_attention: bool = False,
           encoder_cache: bool = False) -> Enabled:
    """Install the named speed-ups on ``model`` (idempotent) for a model on ``device``; returns :class:`Enabled`.

    - ``attention``: every ``Qwen2Attention`` reads a shared prefix and rotates q/k with the fused
      kernel (any device: on the CPU it runs the stock arithmetic). A model already running it
      keeps its A/B options.
    - ``answer_slot``, ``residual_gemm``: the decoder layers' scoring forwards (with ``attention``).
    - ``mlp``, ``rms_norm``, ``encoder_attention``: off the CPU only (:data:`ACCELERATOR_ONLY`).
    - ``encoder_cache``: a frozen audio encoder's output is cached per clip
      (qvad.model.encoder_cache), where the encoder is cacheable; else nothing.

    ``model`` may be the whole model, a peft wrapper or the text model alone. Speed-ups whose
    mirrored transformers code is not the installed one stay off, with one warning (module doc).
    """
    asked = {"attention": attention or answer_slot or residual_gemm, "answer_slot": answer_slot,
             "residual_gemm": residual_gemm, "mlp": mlp, "rms_norm": rms_norm,
             "encoder_attention": encoder_attention, "encoder_cache": encoder_cache}
    if torch.device(device).type == "cpu":
        asked.update({name: False for name in ACCELERATOR_ONLY})
    wanted = [name for name, on in asked.items() if on]
    found = stale({module for name in wanted for module in GUARDED[name]})
    warn_stale(found)
    usable = {name for name in wanted if not any(module in found for module in GUARDED[name])}
    if "attention" not in usable:
        usable -= set(NEEDS_ATTENTION)
    running: dict[str, Any] = {}
    if "attention" in usable:
        if not decoder_attention.fast_attention_enabled(model):
            decoder_attention.enable_fast_attention(model)
        running["attention"] = decoder_attention.fast_attention_enabled(model)
    for text_model in _text_models(model) if running.get("attention") else []:
        if "answer_slot" in usable and not decoder_answer_slot.answer_slot_enabled(text_model):
            decoder_answer_slot.enable_answer_slot(text_model)
        if "residual_gemm" in usable and not decoder_residual_gemm.residual_gemm_enabled(text_model):
            decoder_residual_gemm.enable_residual_gemm(text_model)
    if running.get("attention"):
        text_models = _text_models(model)
        running["answer_slot"] = "answer_slot" in usable and all(
            decoder_answer_slot.answer_slot_enabled(m) for m in text_models)
        running["residual_gemm"] = "residual_gemm" in usable and all(
            decoder_residual_gemm.residual_gemm_enabled(m) for m in text_models)
    if "mlp" in usable:
        running["mlp"] = decoder_mlp.use_fused_mlp(model) > 0
    if "rms_norm" in usable:
        running["rms_norm"] = decoder_norm.use_fused_rms_norm(model) > 0
    if "encoder_attention" in usable:
        running["encoder_attention"] = use_strided_encoder_attention(model) > 0
    if "encoder_cache" in usable:
        from qvad.model.encoder_cache import cache_frozen_encoder, encoder_cacheable  # imports this package

        running["encoder_cache"] = cache_frozen_encoder(model) if encoder_cacheable(model) else None
    return Enabled(**running)


def disable(model: nn.Module, *names: str) -> dict[str, int]:
    """Restore the stock forwards of the named speed-ups (default: every one but the encoder cache,
    which stays for the model's life) in ``model``; returns how many modules each gave back."""
    names = names or ("answer_slot", "residual_gemm", "attention", "mlp", "rms_norm", "encoder_attention")
    unknown = set(names) - (set(GUARDED) - {"encoder_cache"})
    if unknown:
        raise ValueError(f"unknown speed-ups {sorted(unknown)}; known: {sorted(set(GUARDED) - {'encoder_cache'})}")
    undo = {
        "answer_slot": lambda: sum(decoder_answer_slot.disable_answer_slot(m) for m in _text_models(model)),
        "residual_gemm": lambda: sum(decoder_residual_gemm.disable_residual_gemm(m) for m in _text_models(model)),
        "attention": lambda: decoder_attention.disable_fast_attention(model),
        "mlp": lambda: decoder_mlp.disable_fused_mlp(model),
        "rms_norm": lambda: decoder_norm.disable_fused_rms_norm(model),
        "encoder_attention": lambda: disable_strided_encoder_attention(model),
    }
    return {name: undo[name]() for name in names}
