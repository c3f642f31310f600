"""Inference: the project's scorer against the naive HF path, and their exactness checks."""

from __future__ import annotations

import traceback
from typing import Any, Callable

import numpy as np
import torch

from qvad.model.collate import ABCollator
from qvad.model.encoder_truncation import disable_encoder_truncation, enable_encoder_truncation
from qvad.model.prompt import answer_token_ids, build_chat_text
from qvad.model.scoring import score_ab_logits

from .common import (
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


# --------------------------------------------------------------------------------------------
# timing
def time_scorer(model, processor, clips, batch: int, prompt_cfg, feature_device: str | None, **score_kw: Any) -> dict:
    """``qvad.model.scoring.score_ab_logits``; ``score_kw``: its ``prefix_cache`` and ``device_mel``."""
    def run(chunk: list) -> None:
        score_ab_logits(model, processor, chunk, prompt_cfg, batch, feature_device, **score_kw)

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


def prefix_cache_checks(model, processor, prompt_cfg, clips: list[np.ndarray]) -> dict:
    """Prefix-cache scorer vs full-prompt scorer (batch 4)."""
    with_prefix = score_ab_logits(model, processor, clips, prompt_cfg, 4, DEVICE, prefix_cache=True)
    without = score_ab_logits(model, processor, clips, prompt_cfg, 4, DEVICE, prefix_cache=False)
    margin_a, margin_b = with_prefix[:, 0] - with_prefix[:, 1], without[:, 0] - without[:, 1]
    return {
        "prefix_cache_max_abs_logit_diff": float(np.abs(with_prefix - without).max()),
        "logit_abs_max": float(np.abs(without).max()),
        "prefix_cache_same_decisions": bool(((margin_a > 0) == (margin_b > 0)).all()),
        "finite": bool(np.isfinite(with_prefix).all()),
    }


def inference_checks(model, processor, prompt_cfg) -> dict:
    """Device mel vs the processor's (same device); prefix-cache scorer vs full-prompt scorer."""
    mixed = one_second_clips(3, 7)
    mixed = [mixed[0][:4000], mixed[1], container_clips(1, 3)[0], mixed[2][:9000]]
    return {**mel_checks(processor, prompt_cfg, mixed), **prefix_cache_checks(model, processor, prompt_cfg, mixed * 2)}


# --------------------------------------------------------------------------------------------
# the inference section
def scorer_batches(bench: Bench) -> list[int]:
    return [8, 16] if bench.small else [64, 128, 256, 512]


def record_checks(bench: Bench, model, proc) -> None:
    try:
        bench.report["inference_checks"] = inference_checks(model, proc, bench.prompt_cfg)
        log(f"checks: {bench.report['inference_checks']}")
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        bench.report["inference_checks"] = {"error": f"{type(exc).__name__}: {exc}"}
    bench.save()


def scorer_row(bench: Bench, model, proc, label: str, clips_fn: Callable[[int, int], list], batch: int,
               **score_kw: Any) -> None:
    """One scorer measurement (``score_kw`` to ``score_ab_logits``), recorded under ``label``."""
    n = max(4 * batch, 16 if bench.small else 384)
    try:
        row = {"config": label, **time_scorer(model, proc, clips_fn(n, 5), batch, bench.prompt_cfg, DEVICE,
                                              **score_kw)}
    except Exception as exc:  # noqa: BLE001
        row = failure_row(label, batch, exc)
        cleanup()
    bench.add("inference", row, label)


def naive_rows(bench: Bench, model, proc) -> None:
    """The HF path (stock 30 s encoder: truncation off meanwhile)."""
    disable_encoder_truncation(model)
    for batch in ([8] if bench.small else [8, 64]):
        n = max(3 * batch, 16 if bench.small else 192)
        try:
            row = {"config": NAIVE_LABEL, **time_naive(model, proc, one_second_clips(n, 5), batch, bench.prompt_cfg)}
        except Exception as exc:  # noqa: BLE001
            row = {"config": NAIVE_LABEL, "batch": batch, "error": f"{type(exc).__name__}: {exc}"}
            cleanup()
        bench.add("inference", row, "naive")
    enable_encoder_truncation(model, bench.trunc_multiple)


def inference_section(bench: Bench, model, proc) -> None:
    """Checks, naive baseline, scorer sweeps (1 s, 2 s container), attributions at the best 1 s batch."""
    record_checks(bench, model, proc)
    if "naive" not in bench.skip:
        naive_rows(bench, model, proc)
    batches = scorer_batches(bench)
    for batch in batches:
        scorer_row(bench, model, proc, "scorer_1s", one_second_clips, batch)
    best_1s = best(bench.report["inference"], "scorer_1s")
    b = best_1s["batch"] if best_1s else batches[0]
    for batch in sorted({b, batches[-1]}):
        scorer_row(bench, model, proc, "scorer_2s_container", container_clips, batch)
    scorer_row(bench, model, proc, "scorer_1s_no_prefix_cache", one_second_clips, b, prefix_cache=False)
    scorer_row(bench, model, proc, "scorer_1s_processor_mel_gpu", one_second_clips, b, device_mel=False)
