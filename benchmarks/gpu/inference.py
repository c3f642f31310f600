"""Inference: the project's scorer (both prompt layouts) against the landed scorer and the naive HF
path in the same run, and the exactness checks of every speed-up."""

from __future__ import annotations

import traceback
from typing import Any, Callable

import numpy as np
import torch

from qvad.model import accel
from qvad.model.accel.decoder_attention import enable_fast_attention
from qvad.model.accel.kernels import prefix_one_pass, prefix_split, rotary, silu_mul
from qvad.model.accel.kernels.rotary import _FusedRotary, _rotary_reference
from qvad.model.collate import ABCollator
from qvad.model.encoder_truncation import disable_encoder_truncation, enable_encoder_truncation
from qvad.model.prompt import answer_token_ids, build_chat_text
from qvad.model.scoring import score_ab_logits

from . import landed_scoring
from .common import (
    CUDA,
    DEVICE,
    SR,
    Bench,
    best,
    cleanup,
    container_clips,
    failure_row,
    log,
    one_second_clips,
    throughput,
)

NAIVE_LABEL = "naive_hf_30s_full_logits_1s"
QFIRST = {"audio_position": "after_question"}
LANDED_TRUNCATE_MULTIPLE = 20
"""``model.truncate_multiple`` before 2026-12-02: the encoder's frames rounded up to 20 (10 positions)."""


# --------------------------------------------------------------------------------------------
# timing
def time_scorer(model, processor, clips, batch: int, prompt_cfg, feature_device: str | None,
                scorer: Callable = score_ab_logits, **score_kw: Any) -> dict:
    """``qvad.model.scoring.score_ab_logits`` (or the landed one); ``score_kw``: ``prefix_cache``, ``device_mel``."""
    def run(chunk: list) -> None:
        scorer(model, processor, chunk, prompt_cfg, batch, feature_device, **score_kw)

    return throughput(run, clips, batch)


def naive_logits(model, processor, clips, batch: int, prompt_cfg) -> np.ndarray:
    """The HF way: processor on the 30 s layout (STFT on the GPU), stock encoder, full-vocab logits."""
    text = build_chat_text(processor, prompt_cfg)
    id_a, id_b = answer_token_ids(processor.tokenizer)
    out = []
    with torch.inference_mode():
        for start in range(0, len(clips), batch):
            chunk = clips[start : start + batch]
            enc = processor(text=[text] * len(chunk), audio=chunk, sampling_rate=SR, padding=True,
                            padding_side="left", return_tensors="pt", device=DEVICE).to(DEVICE)
            logits = model(**enc, use_cache=False).logits[:, -1]
            out.append(logits[:, [id_a, id_b]].float().cpu().numpy())
    return np.concatenate(out)


def time_naive(model, processor, clips, batch: int, prompt_cfg) -> dict:
    return throughput(lambda chunk: naive_logits(model, processor, chunk, batch, prompt_cfg), clips, batch)


class stock_forwards:  # noqa: N801 - a context manager used like a function
    """The stock ``Qwen2Attention`` and ``Qwen2MLP`` forwards inside the block (naive and landed
    paths, plain reference path)."""

    def __init__(self, model) -> None:
        self.model = model

    def __enter__(self) -> None:
        accel.disable(self.model, "attention", "mlp", "encoder_attention")

    def __exit__(self, *exc: object) -> None:
        accel.enable(self.model, DEVICE, attention=True, mlp=True, encoder_attention=True)


# --------------------------------------------------------------------------------------------
# exactness
def mel_checks(processor, prompt_cfg, clips: list[np.ndarray]) -> dict:
    """Device mel vs the processor's (same device): features, token ids, feature mask."""
    fast = ABCollator(processor, prompt_cfg, DEVICE).prompt_batch(clips)
    ref = processor(text=[build_chat_text(processor, prompt_cfg)] * len(clips), audio=clips, sampling_rate=SR,
                    padding=True, padding_side="left", return_tensors="pt", device=DEVICE)
    return {
        "mel_max_abs_diff_vs_processor": float((fast["input_features"].cpu() - ref["input_features"]).abs().max()),
        "input_ids_equal": bool(torch.equal(fast["input_ids"].cpu(), ref["input_ids"])),
        "feature_mask_equal": bool(torch.equal(fast["feature_attention_mask"].cpu(), ref["feature_attention_mask"])),
    }


def scorer_checks(model, processor, prompt_cfg, clips: list[np.ndarray]) -> dict:
    """The scorer (shared prefix, fused rotary) vs the plain path (full prompts, stock attention), batch 4."""
    fast = score_ab_logits(model, processor, clips, prompt_cfg, 4, DEVICE)
    separate_adds = score_ab_logits(model, processor, clips, prompt_cfg, 4, DEVICE, residual_gemm=False)
    with stock_forwards(model):
        plain = score_ab_logits(model, processor, clips, prompt_cfg, 4, DEVICE, prefix_cache=False)
        landed = landed_scoring.score_ab_logits(model, processor, clips, prompt_cfg, 4, DEVICE)
    margin = lambda x: x[:, 0] - x[:, 1]  # noqa: E731
    return {
        "max_abs_logit_diff_vs_plain": float(np.abs(fast - plain).max()),
        "max_abs_logit_diff_landed_vs_plain": float(np.abs(landed - plain).max()),
        "max_abs_logit_diff_separate_residual_adds_vs_plain": float(np.abs(separate_adds - plain).max()),
        "logit_abs_max": float(np.abs(plain).max()),
        "same_decisions_as_plain": int(((margin(fast) > 0) == (margin(plain) > 0)).sum()),
        "clips": len(clips),
        "finite": bool(np.isfinite(fast).all()),
    }


def rotary_checks() -> dict:
    """The fused rotary kernel vs the stock expression at the 7B's shapes: bit-identical, both ways."""
    if not CUDA:
        return {"skipped": "no CUDA"}
    gen = torch.Generator(device="cuda").manual_seed(0)
    out = {}
    for rows, tokens in ((64, 87), (3, 20)):
        q = torch.randn(rows, tokens, 32, 128, device="cuda", generator=gen).to(torch.bfloat16).requires_grad_()
        k = torch.randn(rows, tokens, 32, 128, device="cuda", generator=gen).to(torch.bfloat16).requires_grad_()
        pos = torch.arange(tokens, device="cuda", dtype=torch.float32)[None].expand(rows, -1) + 20
        inv = 1.0 / (10000 ** (torch.arange(0, 128, 2, device="cuda").float() / 128))
        emb = torch.cat([pos[..., None] * inv] * 2, -1)
        cos, sin = emb.cos().to(torch.bfloat16), emb.sin().to(torch.bfloat16)
        q2, k2 = q.detach().clone().requires_grad_(), k.detach().clone().requires_grad_()
        try:
            fused = _FusedRotary.apply(q, k, cos, sin)
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            return {"error": f"{type(exc).__name__}: {exc}"}
        ref = _rotary_reference(q2, k2, cos, sin)
        grads = (torch.randn_like(fused[0]), torch.randn_like(fused[1]))
        torch.autograd.backward(fused, grads)
        torch.autograd.backward(ref, grads)
        diff = lambda a, b: {"max_abs": float((a.float() - b.float()).abs().max()),  # noqa: E731
                             "fraction_differing": float((a != b).float().mean())}
        out[f"{rows}x{tokens}"] = {
            "forward_bit_identical": bool(torch.equal(fused[0], ref[0]) and torch.equal(fused[1], ref[1])),
            "backward_bit_identical": bool(torch.equal(q.grad, q2.grad) and torch.equal(k.grad, k2.grad)),
            "forward_q": diff(fused[0], ref[0]), "backward_q": diff(q.grad, q2.grad),
        }
    return out


def silu_mul_checks() -> dict:
    """The fused SiLU-mul kernel vs the stock kernels at the 7B's MLP width: bit-identical."""
    if not CUDA:
        return {"skipped": "no CUDA"}
    gen = torch.Generator(device="cuda").manual_seed(1)
    gate = (4 * torch.randn(4096, 11008, device="cuda", generator=gen)).to(torch.bfloat16)
    up = torch.randn(4096, 11008, device="cuda", generator=gen).to(torch.bfloat16)
    with torch.inference_mode():
        stock = torch.nn.functional.silu(gate) * up
        try:
            fused = silu_mul.silu_mul(gate.clone(), up)
        except Exception as exc:  # noqa: BLE001
            return {"error": f"{type(exc).__name__}: {exc}"}
    return {"bit_identical": bool(torch.equal(fused, stock)),
            "fraction_differing": float((fused != stock).float().mean()),
            "max_abs": float((fused.float() - stock.float()).abs().max()),
            "fused_mlp_error": silu_mul.FUSED_MLP_ERROR}


def inference_checks(model, processor, prompt_cfg) -> dict:
    mixed = one_second_clips(3, 7)
    mixed = [mixed[0][:4000], mixed[1], container_clips(1, 3)[0], mixed[2][:9000]]
    checks = {"rotary": rotary_checks(), "silu_mul": silu_mul_checks(), **mel_checks(processor, prompt_cfg, mixed)}
    checks["fused_rotary_error"] = rotary.FUSED_ROTARY_ERROR
    equal = one_second_clips(8, 11)  # unpadded batches: the split prefix attention (qvad.model.accel.kernels.prefix_split)
    for name, cfg in (("before_question", prompt_cfg), ("after_question", {**prompt_cfg, **QFIRST})):
        checks[f"scorer_{name}"] = scorer_checks(model, processor, cfg, mixed * 2)
        checks[f"scorer_unpadded_{name}"] = scorer_checks(model, processor, cfg, equal)
    checks["merge_kernel_error"] = prefix_split.MERGE_KERNEL_ERROR
    checks["one_pass_kernel_error"] = prefix_one_pass.ONE_PASS_KERNEL_ERROR
    return checks


# --------------------------------------------------------------------------------------------
# the inference section
def record_checks(bench: Bench, model, proc) -> None:
    try:
        bench.report["inference_checks"] = inference_checks(model, proc, bench.prompt_cfg)
        log(f"checks: {bench.report['inference_checks']}")
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        bench.report["inference_checks"] = {"error": f"{type(exc).__name__}: {exc}"}
    bench.save()


def scorer_row(bench: Bench, model, proc, label: str, clips_fn: Callable[[int, int], list], batch: int,
               prompt_cfg: dict | None = None, est_s: float = 12, **score_kw: Any) -> None:
    """One scorer measurement (``score_kw`` to the scorer), recorded under ``label`` with its FLOPs."""
    if not bench.clock.have(est_s):
        bench.add("inference", {"config": label, "batch": batch, "skipped": "time budget"}, label)
        return
    cfg = bench.prompt_cfg if prompt_cfg is None else prompt_cfg
    n = max(4 * batch, 16 if bench.small else 384)
    try:
        row = {"config": label, **time_scorer(model, proc, clips_fn(n, 5), batch, cfg, DEVICE, **score_kw)}
    except Exception as exc:  # noqa: BLE001
        row = failure_row(label, batch, exc)
        cleanup()
    bench.add("inference", bench.with_flops(row, "scorer", clips_fn, cfg), label)


def naive_rows(bench: Bench, model, proc) -> None:
    """The HF path (stock attention, stock 30 s encoder: truncation off meanwhile)."""
    disable_encoder_truncation(model)
    batch = 8 if bench.small else 64
    n = max(3 * batch, 16 if bench.small else 192)
    with stock_forwards(model):
        try:
            row = {"config": NAIVE_LABEL, **time_naive(model, proc, one_second_clips(n, 5), batch, bench.prompt_cfg)}
        except Exception as exc:  # noqa: BLE001
            row = failure_row(NAIVE_LABEL, batch, exc)
            cleanup()
    enable_encoder_truncation(model, bench.trunc_multiple)
    bench.add("inference", bench.with_flops(row, "scorer", one_second_clips, bench.prompt_cfg), "naive")


def inference_section(bench: Bench, model, proc) -> None:
    """Checks; naive and landed scorer; the scorer in both layouts (1 s, 2 s container); attributions."""
    record_checks(bench, model, proc)
    qfirst = {**bench.prompt_cfg, **QFIRST}
    small = bench.small
    if "naive" not in bench.skip:
        naive_rows(bench, model, proc)
    b = 8 if small else 512
    with stock_forwards(model):
        scorer_row(bench, model, proc, "landed_scorer_1s", one_second_clips, b, scorer=landed_scoring.score_ab_logits)
    for batch in ([8, 16] if small else [512, 1024]):
        scorer_row(bench, model, proc, "scorer_1s", one_second_clips, batch)
    for batch in ([8] if small else [512, 1024, 2048, 4096]):
        scorer_row(bench, model, proc, "scorer_2s_container", container_clips, batch)
    for batch in ([8, 16] if small else [1024, 2048, 4096]):
        scorer_row(bench, model, proc, "scorer_1s_question_first", one_second_clips, batch, qfirst)
    for batch in ([8] if small else [1024]):
        scorer_row(bench, model, proc, "scorer_2s_container_question_first", container_clips, batch, qfirst)
    top = best(bench.report["inference"], "scorer_1s")
    b = top["batch"] if top else b
    two_pass_rows(bench, model, proc, b, qfirst)
    if "attrib" not in bench.skip:  # the older speed-ups' attributions (in earlier result files)
        attribution_rows(bench, model, proc, b, qfirst)
    bench.save()


def two_pass_rows(bench: Bench, model, proc, b: int, qfirst: dict) -> None:
    """The headline rows with the prefix and own keys attended in two flash calls and a merge (the
    split path before qvad.model.accel.kernels.prefix_one_pass), in the same run."""
    small = bench.small
    enable_fast_attention(model, one_pass=False)
    for label, clips_fn, batch, cfg in (("scorer_1s", one_second_clips, b, None),
                                        ("scorer_2s_container", container_clips, 8 if small else 2048, None),
                                        ("scorer_1s_question_first", one_second_clips, 16 if small else 4096, qfirst)):
        scorer_row(bench, model, proc, f"{label}_two_pass_attention", clips_fn, batch, cfg)
    enable_fast_attention(model)


def attribution_rows(bench: Bench, model, proc, b: int, qfirst: dict) -> None:
    """What each landed speed-up buys: the scorer with one of them switched off at a time."""
    small = bench.small
    enable_fast_attention(model, split_prefix=False)
    scorer_row(bench, model, proc, "scorer_1s_prefix_buffers", one_second_clips, b)
    scorer_row(bench, model, proc, "scorer_2s_container_prefix_buffers", container_clips, 8 if small else 1024)
    scorer_row(bench, model, proc, "scorer_1s_question_first_prefix_buffers", one_second_clips,
               16 if small else 2048, qfirst)
    enable_fast_attention(model, fused_rotary=False)
    scorer_row(bench, model, proc, "scorer_1s_stock_rotary", one_second_clips, b)
    enable_fast_attention(model)
    scorer_row(bench, model, proc, "scorer_1s_no_shared_prefix", one_second_clips, b, prefix_cache=False)
    scorer_row(bench, model, proc, "scorer_1s_full_last_layer", one_second_clips, b, answer_slot=False)
    for label, clips_fn, batch, cfg in (("scorer_1s", one_second_clips, b, None),
                                        ("scorer_2s_container", container_clips, 8 if small else 1024, None),
                                        ("scorer_1s_question_first", one_second_clips, 16 if small else 2048, qfirst)):
        scorer_row(bench, model, proc, f"{label}_separate_residual_add", clips_fn, batch, cfg, residual_gemm=False)
    if bench.trunc_multiple != LANDED_TRUNCATE_MULTIPLE:
        enable_encoder_truncation(model, LANDED_TRUNCATE_MULTIPLE)
        for label, clips_fn, batch, cfg in (("scorer_2s_container", container_clips, 8 if small else 1024, None),
                                            ("scorer_1s_question_first", one_second_clips, 16 if small else 2048,
                                             qfirst)):
            scorer_row(bench, model, proc, f"{label}_truncate_multiple_{LANDED_TRUNCATE_MULTIPLE}", clips_fn,
                       batch, cfg)
        enable_encoder_truncation(model, bench.trunc_multiple)
    accel.disable(model, "mlp")
    scorer_row(bench, model, proc, "scorer_1s_stock_mlp", one_second_clips, b)
    accel.enable(model, DEVICE, mlp=True)
    accel.disable(model, "encoder_attention")
    scorer_row(bench, model, proc, "scorer_2s_container_stock_encoder_attention", container_clips, 8 if small else 1024)
    accel.enable(model, DEVICE, encoder_attention=True)
