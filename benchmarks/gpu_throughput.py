#!/usr/bin/env python3
"""GPU throughput of the project's own scoring and training paths on Qwen2-Audio-7B's architecture.

Random weights, built on the GPU in bf16 with the real model's shapes (../shared/qwen2-audio.md),
with the offline tiny tokenizer/processor of qvad.model.presets.tiny (its <|AUDIO|> id becomes the 7B
config's audio_token_index). The weights reach the model through the project's own loader,
``qvad.model.loading.load_model_and_processor`` (same dtype rules, NF4 settings, k-bit preparation,
feature-cast hook and encoder truncation as the stages), fed from an in-memory state dict
instead of a 16 GB checkpoint (falls back to writing one to /tmp if that route fails).

Measured, each as clips/s and peak GPU memory (torch.cuda.max_memory_allocated):

* inference: ``qvad.model.scoring.score_ab_logits`` (the evaluate stage's scorer) with
  ``feature_device='cuda'``, a batch-size sweep, on 1 s clips and on 2 s containers holding a
  centred 0.2-1 s clip; against the naive path in the same run (processor on the 30 s layout,
  stock 30 s encoder, full-vocabulary logits); plus attributions (prefix cache off, processor mel);
* LoRA bf16 training: the train stage's step, i.e. the HF Trainer (bf16 autocast, fused AdamW,
  grad clipping) over ``qvad.model.trainer.AugmentingCollator(ABCollator(..., feature_device='cuda'))``
  batches, LoRA from ``qvad.model.loading.apply_lora`` (params.yaml lora.*), encoder truncation on;
* QLoRA NF4 training: the same through the NF4 loader (quantized from the clean bf16 weights
  before any LoRA is injected).

Usage (repo root, GPU box): ``python3 benchmarks/gpu_throughput.py --out DIR``; ``--tiny`` runs the
same code on the tiny architecture (smoke test; also works on the CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import types  # noqa: E402

try:  # WAV I/O (soundfile, soxr) is imported by qvad.model.trainer's dataset module, absent on the GPU box
    import qvad.audio.io  # noqa: E402, F401
except ImportError as _exc:
    _stub = types.ModuleType("qvad.audio.io")

    def _no_wav_io(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError(f"WAV I/O unavailable here ({_exc}); the benchmark uses synthetic clips")

    _stub.read_wav = _no_wav_io
    sys.modules["qvad.audio.io"] = _stub

import transformers  # noqa: E402
from transformers import (  # noqa: E402
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

import qvad.model.loading as model_load  # noqa: E402
from qvad.model import collate as collate_mod  # noqa: E402
from qvad.model import scoring  # noqa: E402
from qvad.model.collate import ABCollator  # noqa: E402
from qvad.model.encoder_truncation import disable_encoder_truncation, enable_encoder_truncation  # noqa: E402
from qvad.model.loading import load_model_and_processor, use_fused_rms_norm
from qvad.model.lora import apply_lora  # noqa: E402
from qvad.model.presets.tiny import build_feature_extractor, build_tokenizer, tiny_config  # noqa: E402
from qvad.common.params import load_params  # noqa: E402
from qvad.model.prompt import answer_token_ids, build_chat_text  # noqa: E402
from qvad.model.trainer import AugmentingCollator  # noqa: E402

PRESET = "qwen2-audio-7b-instruct"
SR = 16_000
GIB = 2**30
TARGETS = {"inference": 400.0, "lora_bf16": 60.0, "qlora_nf4": 20.0, "qlora_nf4_peak_gib": 16.0}
NAIVE_NOTES = {  # ../shared/qwen2-audio.md, one H100, 1 s clips, ~65 tokens
    "inference": "102 clips/s (batch 64, naive HF forward, bf16)",
    "lora_bf16": "22.4 clips/s at 19.6 GiB (batch 16, grad checkpointing, 30 s encoder)",
    "qlora_nf4": "8.6 clips/s at 15.9 GiB (batch 16, grad checkpointing)",
}

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


# --------------------------------------------------------------------------------------------
# small helpers
def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def reset_peak() -> None:
    if CUDA:
        torch.cuda.reset_peak_memory_stats()


def peak() -> dict[str, float]:
    if not CUDA:
        return {}
    return {
        "peak_alloc_gib": round(torch.cuda.max_memory_allocated() / GIB, 2),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 2),
    }


def cleanup() -> None:
    gc.collect()
    if CUDA:
        torch.cuda.empty_cache()


def allocated_gib() -> float:
    return round(torch.cuda.memory_allocated() / GIB, 2) if CUDA else 0.0


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class Clock:
    """Wall-clock budget: optional measurements are skipped when they would not fit."""

    def __init__(self, budget_s: float) -> None:
        self.start = time.perf_counter()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def have(self, seconds: float) -> bool:
        return self.elapsed() + seconds < self.budget_s


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# model, processor, data
def make_processor() -> Qwen2AudioProcessor:
    tokenizer = build_tokenizer()
    processor = Qwen2AudioProcessor(feature_extractor=build_feature_extractor(), tokenizer=tokenizer)
    tokenizer.chat_template = processor.chat_template
    return processor


def make_config(processor: Qwen2AudioProcessor, tiny: bool) -> Qwen2AudioConfig:
    """The 7B shapes; token ids from the tiny tokenizer (all far below the 7B vocabulary)."""
    tok = processor.tokenizer
    if tiny:
        return tiny_config(tok)
    ids = tok.convert_tokens_to_ids
    return Qwen2AudioConfig(
        audio_config={
            "model_type": "qwen2_audio_encoder",
            "num_mel_bins": 128,
            "d_model": 1280,
            "encoder_layers": 32,
            "encoder_attention_heads": 20,
            "encoder_ffn_dim": 5120,
            "max_source_positions": 1500,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": 156032,
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "tie_word_embeddings": False,
            "bos_token_id": ids("<|endoftext|>"),
            "eos_token_id": ids("<|im_end|>"),
            "pad_token_id": ids("<|endoftext|>"),
        },
        audio_token_index=processor.audio_token_id,
    )


def random_state_dict(config: Qwen2AudioConfig) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Random bf16 weights built directly on the GPU (HF init), kept on the host for the loaders."""
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = Qwen2AudioForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    counts = {
        "total": sum(p.numel() for p in model.parameters()),
        "audio_tower": sum(p.numel() for p in model.model.audio_tower.parameters()),
        "language_model": sum(p.numel() for p in model.model.language_model.parameters()),
        "lm_head": model.lm_head.weight.numel(),
    }
    state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    del model
    cleanup()
    return state, counts


@contextlib.contextmanager
def weights_from_memory(state_dict: dict[str, torch.Tensor]):
    """Let qvad.model.loading's from_pretrained take the weights from ``state_dict`` (config from the dir)."""
    real = model_load.Qwen2AudioForConditionalGeneration

    class FromMemory(real):  # type: ignore[misc, valid-type]
        @classmethod
        def from_pretrained(cls, path, **kwargs):  # noqa: ANN001, ANN206
            kwargs.pop("use_safetensors", None)
            config = Qwen2AudioConfig.from_pretrained(path)
            return real.from_pretrained(None, config=config, state_dict=dict(state_dict), **kwargs)

    model_load.Qwen2AudioForConditionalGeneration = FromMemory
    try:
        yield
    finally:
        model_load.Qwen2AudioForConditionalGeneration = real


class Loader:
    """Loads through qvad.model.loading.load_model_and_processor from memory, else from a /tmp checkpoint."""

    def __init__(self, config: Qwen2AudioConfig, processor: Qwen2AudioProcessor, state: dict, workdir: Path,
                 tiny: bool) -> None:
        self.dir = workdir / "base"
        self.dir.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(self.dir)
        processor.save_pretrained(self.dir)
        self.state = state
        self.route = "memory"
        self.notes: list[str] = []
        self.tiny = tiny

    def load(self, quantization: str, for_training: bool, **extra: Any):
        cfg = {"preset": "tiny" if self.tiny else PRESET, "path": str(self.dir), "quantization": quantization, **extra}
        start = time.perf_counter()
        if self.route == "memory":
            try:
                with weights_from_memory(self.state):
                    out = load_model_and_processor(cfg, DEVICE, for_training=for_training)
                self.notes.append(f"{quantization}: in-memory load {time.perf_counter() - start:.1f} s")
                return out
            except Exception as exc:  # noqa: BLE001
                self.notes.append(f"{quantization}: in-memory load failed ({type(exc).__name__}: {exc}); "
                                  "falling back to a safetensors checkpoint in /tmp")
                log(self.notes[-1])
                traceback.print_exc()
                cleanup()
                self._write_checkpoint()
        start = time.perf_counter()
        out = load_model_and_processor(cfg, DEVICE, for_training=for_training)
        self.notes.append(f"{quantization}: checkpoint load {time.perf_counter() - start:.1f} s")
        return out

    def _write_checkpoint(self) -> None:
        from safetensors.torch import save_file

        start = time.perf_counter()
        save_file({k: v.contiguous() for k, v in self.state.items()}, str(self.dir / "model.safetensors"),
                  metadata={"format": "pt"})
        self.route = "checkpoint"
        self.notes.append(f"wrote {self.dir / 'model.safetensors'} in {time.perf_counter() - start:.1f} s")


def one_second_clips(n: int, seed: int) -> list[np.ndarray]:
    """1 s clips: white noise and chirp-like tones, alternating."""
    rng = np.random.default_rng(seed)
    t = np.arange(SR) / SR
    clips = []
    for i in range(n):
        if i % 2:
            clips.append((0.5 * np.sin(2 * np.pi * (200 + 300 * rng.random()) * t * (1 + t))).astype(np.float32))
        else:
            clips.append((0.1 * rng.standard_normal(SR)).astype(np.float32))
    return clips


def container_clips(n: int, seed: int, container_s: float = 2.0) -> list[np.ndarray]:
    """2 s containers of low-level noise with a 0.2-1 s clip centred in each (the mix stage's layout)."""
    rng = np.random.default_rng(seed)
    out = []
    for clip in one_second_clips(n, seed + 1):
        box = (1e-3 * rng.standard_normal(int(container_s * SR))).astype(np.float32)
        length = int(rng.uniform(0.2, 1.0) * SR)
        start = (len(box) - length) // 2
        box[start : start + length] += clip[:length]
        out.append(box)
    return out


def tokens_per_clip(processor: Any, clip: np.ndarray, prompt_cfg: Any) -> int:
    return int(ABCollator(processor, prompt_cfg).prompt_batch([clip])["input_ids"].shape[1])


# --------------------------------------------------------------------------------------------
# inference
def time_scorer(model, processor, clips, batch: int, prompt_cfg, feature_device: str | None) -> dict:
    scoring.score_ab_logits(model, processor, clips[:batch], prompt_cfg, batch, feature_device)  # warm-up
    sync()
    reset_peak()
    start = time.perf_counter()
    scoring.score_ab_logits(model, processor, clips, prompt_cfg, batch, feature_device)
    sync()
    seconds = time.perf_counter() - start
    return {"batch": batch, "clips": len(clips), "seconds": round(seconds, 3),
            "clips_per_s": round(len(clips) / seconds, 1), **peak()}


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
    naive_logits(model, processor, clips[:batch], batch, prompt_cfg)
    sync()
    reset_peak()
    start = time.perf_counter()
    naive_logits(model, processor, clips, batch, prompt_cfg)
    sync()
    seconds = time.perf_counter() - start
    return {"batch": batch, "clips": len(clips), "seconds": round(seconds, 3),
            "clips_per_s": round(len(clips) / seconds, 1), **peak()}


def inference_checks(model, processor, prompt_cfg) -> dict:
    """Device mel vs the processor's (same device); prefix-cache scorer vs full-prompt scorer."""
    mixed = one_second_clips(3, 7)
    mixed = [mixed[0][:4000], mixed[1], container_clips(1, 3)[0], mixed[2][:9000]]
    fast = ABCollator(processor, prompt_cfg, DEVICE).prompt_batch(mixed)
    ref = processor(text=[build_chat_text(processor, prompt_cfg)] * len(mixed), audio=mixed, sampling_rate=SR,
                    padding=True, padding_side="left", return_tensors="pt", device=DEVICE)
    checks = {
        "mel_max_abs_diff_vs_processor": float((fast["input_features"].cpu() - ref["input_features"]).abs().max()),
        "input_ids_equal": bool(torch.equal(fast["input_ids"].cpu(), ref["input_ids"])),
        "feature_mask_equal": bool(torch.equal(fast["feature_attention_mask"].cpu(), ref["feature_attention_mask"])),
    }
    clips = mixed * 2
    scoring.PREFIX_CACHE = True
    with_prefix = scoring.score_ab_logits(model, processor, clips, prompt_cfg, 4, DEVICE)
    scoring.PREFIX_CACHE = False
    without = scoring.score_ab_logits(model, processor, clips, prompt_cfg, 4, DEVICE)
    scoring.PREFIX_CACHE = True
    margin_a, margin_b = with_prefix[:, 0] - with_prefix[:, 1], without[:, 0] - without[:, 1]
    checks.update({
        "prefix_cache_max_abs_logit_diff": float(np.abs(with_prefix - without).max()),
        "logit_abs_max": float(np.abs(without).max()),
        "prefix_cache_same_decisions": bool(((margin_a > 0) == (margin_b > 0)).all()),
        "finite": bool(np.isfinite(with_prefix).all()),
    })
    return checks


# --------------------------------------------------------------------------------------------
# training (the HF Trainer, as stages/train.py drives it)
class ClipList(torch.utils.data.Dataset):
    def __init__(self, clips: list[np.ndarray]) -> None:
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict:
        return {"audio": self.clips[i], "label": i % 2}


class StepClock(TrainerCallback):
    """Times optimizer steps ``warm+1 .. max_steps`` (device synchronised at both ends only)."""

    def __init__(self, warm: int) -> None:
        self.warm, self.t0, self.t1 = warm, None, None

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201, D102
        if state.global_step == self.warm:
            sync()
            self.t0 = time.perf_counter()
        if state.global_step == args.max_steps:
            sync()
            self.t1 = time.perf_counter()


def time_training(peft_model, processor, clips_fn: Callable[[int, int], list], batch: int, prompt_cfg,
                  workdir: Path, steps: int, warm: int, feature_device: str | None = DEVICE,
                  on_device: bool = False) -> dict:
    clips = clips_fn(batch * steps, 11)
    base = ABCollator(processor, prompt_cfg, feature_device)
    base.train_batches_on_device = on_device
    args = TrainingArguments(
        output_dir=str(workdir / "trainer"),
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=1e-4,
        warmup_steps=0,
        lr_scheduler_type="linear",
        weight_decay=0.0,
        bf16=CUDA,
        use_cpu=not CUDA,
        logging_steps=10_000,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=CUDA and not on_device,
        disable_tqdm=True,
        seed=0,
    )
    clock = StepClock(warm)
    own_forward = peft_model.__dict__.get("forward")  # accelerate wraps forward (autocast); undone below
    trainer = Trainer(model=peft_model, args=args, train_dataset=ClipList(clips),
                      data_collator=AugmentingCollator(base, False, 0), processing_class=processor,
                      callbacks=[clock])
    reset_peak()
    try:
        trainer.train()
        seconds = clock.t1 - clock.t0
        return {"batch": batch, "steps_timed": steps - warm, "seconds": round(seconds, 3),
                "clips_per_s": round(batch * (steps - warm) / seconds, 1), **peak()}
    finally:
        del trainer
        if own_forward is None:
            peft_model.__dict__.pop("forward", None)
        else:
            peft_model.forward = own_forward
        for p in peft_model.parameters():
            p.grad = None
        cleanup()


def sweep_training(results: list, label: str, peft_model, processor, clips_fn, batches, prompt_cfg, workdir,
                   clock: Clock, est_s: float, steps: int, warm: int, cap_gib: float | None = None, **kw) -> None:
    """Ascending batch sizes; stops at the first OOM (or first peak over ``cap_gib``)."""
    for batch in batches:
        if not clock.have(est_s):
            results.append({"config": label, "batch": batch, "skipped": "time budget"})
            log(f"{label} batch {batch}: skipped (time budget)")
            continue
        try:
            row = {"config": label, **time_training(peft_model, processor, clips_fn, batch, prompt_cfg, workdir,
                                                    steps, warm, **kw)}
        except Exception as exc:  # noqa: BLE001
            if not is_oom(exc):
                traceback.print_exc()
            row = {"config": label, "batch": batch, "error": "OOM" if is_oom(exc) else f"{type(exc).__name__}: {exc}"}
            cleanup()
        results.append(row)
        log(f"{label}: {row}")
        if "error" in row or (cap_gib is not None and row.get("peak_alloc_gib", 0) > cap_gib):
            break


def best(rows: list, config: str, cap_gib: float | None = None) -> dict | None:
    ok = [r for r in rows if r.get("config") == config and "clips_per_s" in r
          and (cap_gib is None or r.get("peak_alloc_gib", 0) <= cap_gib)]
    return max(ok, key=lambda r: r["clips_per_s"]) if ok else None


def set_checkpointing(peft_model, on: bool) -> None:
    inner = peft_model.get_base_model()
    if on:
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        inner.gradient_checkpointing_disable()


# --------------------------------------------------------------------------------------------
# profiling of the scorer (--profile)
def stock_rms_norm(model: torch.nn.Module) -> int:
    """Undo qvad.model.loading.use_fused_rms_norm (for A/B measurements)."""
    count = 0
    for module in model.modules():
        if type(module).__name__ == "Qwen2RMSNorm" and "forward" in module.__dict__:
            del module.forward
            count += 1
    return count


def kernel_breakdown(prof, wall_s: float) -> dict:
    """GPU kernel time by category and the top kernels, from a torch.profiler run."""
    cuda = torch.autograd.DeviceType.CUDA
    rows = [(e.key, e.self_device_time_total, e.count) for e in prof.key_averages()
            if e.device_type == cuda and e.self_device_time_total > 0]
    total = sum(t for _, t, _ in rows)
    cats: dict[str, float] = {}
    for key, t, _ in rows:
        k = key.lower()
        if any(w in k for w in ("fmha", "flash", "attention", "efficient")):
            cat = "attention"
        elif any(w in k for w in ("gemm", "nvjet", "xmma", "cutlass", "cublas", "sm90_", "wgmma")):
            cat = "matmul"
        elif "fft" in k:
            cat = "fft"
        elif any(w in k for w in ("copy", "cat", "memcpy", "memset", "fill")):
            cat = "copy/cat/fill"
        elif "conv" in k or "implicit" in k:
            cat = "conv"
        else:
            cat = "elementwise/reduce/other"
        cats[cat] = cats.get(cat, 0.0) + t
    top = sorted(rows, key=lambda r: -r[1])[:25]
    return {
        "wall_s": round(wall_s, 3),
        "gpu_kernel_s": round(total / 1e6, 3),
        "gpu_busy_fraction": round(total / 1e6 / wall_s, 3),
        "by_category_s": {k: round(v / 1e6, 3) for k, v in sorted(cats.items(), key=lambda kv: -kv[1])},
        "top_kernels": [{"kernel": k[:110], "s": round(t / 1e6, 4), "calls": c} for k, t, c in top],
    }


def run_profile(report: dict, model, proc, prompt_cfg, clock: Clock, save, batch: int, tiny: bool) -> None:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if CUDA else [])
    prof_rows = report.setdefault("profile", {})
    n = batch * (1 if tiny else 3)
    clips = one_second_clips(n, 5)

    def timed(label: str, fn_clips=one_second_clips, b: int = batch) -> dict:
        row = {"config": label, **time_scorer(model, proc, fn_clips(max(n, 3 * b), 5), b, prompt_cfg, DEVICE)}
        report["inference"].append(row)
        log(f"{label}: {row}")
        save()
        return row

    prof_rows["stock_rmsnorm_modules"] = stock_rms_norm(model)
    timed("profile_baseline_scorer_1s")
    # host side alone: the collator for one batch
    col = ABCollator(proc, prompt_cfg, DEVICE)
    col.prompt_batch(clips[:batch])
    sync()
    start = time.perf_counter()
    for _ in range(3):
        col.prompt_batch(clips[:batch])
    sync()
    prof_rows["collate_one_batch_s"] = round((time.perf_counter() - start) / 3, 4)
    # encoder alone on the truncated mel of one batch
    feats = col.prompt_batch(clips[:batch])["input_features"]
    keep = 120 if not tiny else feats.shape[-1]
    tower = model.model.audio_tower
    x = feats[..., :keep].to(next(tower.parameters()).dtype).contiguous()
    with torch.inference_mode():
        tower(x)
        sync()
        start = time.perf_counter()
        for _ in range(3):
            tower(x)
        sync()
    prof_rows["encoder_one_batch_s"] = round((time.perf_counter() - start) / 3, 4)
    log(f"collate {prof_rows['collate_one_batch_s']} s, encoder {prof_rows['encoder_one_batch_s']} s per batch")
    # kernel breakdown of the scorer
    scoring.score_ab_logits(model, proc, clips[:batch], prompt_cfg, batch, DEVICE)
    sync()
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        scoring.score_ab_logits(model, proc, clips, prompt_cfg, batch, DEVICE)
        sync()
    prof_rows["scorer_kernels"] = kernel_breakdown(prof, time.perf_counter() - start)
    log(f"kernels: {json.dumps(prof_rows['scorer_kernels'])[:3000]}")
    save()
    # candidate: fused RMSNorm
    ref = scoring.score_ab_logits(model, proc, clips[:64], prompt_cfg, 64, DEVICE)
    prof_rows["fused_rmsnorm_modules"] = use_fused_rms_norm(model)
    new = scoring.score_ab_logits(model, proc, clips[:64], prompt_cfg, 64, DEVICE)
    prof_rows["fused_rmsnorm_max_abs_logit_diff"] = float(np.abs(new - ref).max())
    prof_rows["fused_rmsnorm_same_decisions"] = bool((((ref[:, 0] - ref[:, 1]) > 0) == ((new[:, 0] - new[:, 1]) > 0)).all())
    timed("profile_fused_rmsnorm_scorer_1s")
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        scoring.score_ab_logits(model, proc, clips, prompt_cfg, batch, DEVICE)
        sync()
    prof_rows["scorer_kernels_fused_rmsnorm"] = kernel_breakdown(prof, time.perf_counter() - start)
    save()
    # candidate: tightest encoder cut (multiple 2: 104 frames for 1 s instead of 120)
    enable_encoder_truncation(model, 2)
    timed("profile_fused_rmsnorm_trunc2_scorer_1s")
    enable_encoder_truncation(model, report["truncate_multiple"])
    # candidate: cuDNN autotuning for the two encoder convolutions
    torch.backends.cudnn.benchmark = True
    timed("profile_fused_rmsnorm_cudnn_benchmark_scorer_1s")
    torch.backends.cudnn.benchmark = False
    timed("profile_fused_rmsnorm_scorer_2s_container", container_clips)
    # does training gain too? LoRA bf16, 1 s clips, same batch, with and without the fused norm
    if clock.have(90):
        model.config.text_config.use_cache = False
        peft_model, _ = apply_lora(model, report["lora"], "tiny" if tiny else PRESET)
        enable_encoder_truncation(peft_model, report["truncate_multiple"])
        b = 8 if tiny else 64
        workdir = Path(tempfile.mkdtemp(prefix="qvad_prof_"))
        rows = report["training"]
        for label in ("profile_fused_rmsnorm_lora_bf16_1s", "profile_hf_rmsnorm_lora_bf16_1s"):
            if label.startswith("profile_hf"):
                stock_rms_norm(model)
            sweep_training(rows, label, peft_model, proc, one_second_clips, [b], prompt_cfg, workdir, clock, 30,
                           3 if tiny else 8, 1 if tiny else 2)
            save()
    save()


# --------------------------------------------------------------------------------------------
def environment() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name(0) if CUDA else "cpu",
    }
    for name in ("peft", "accelerate", "bitsandbytes", "tokenizers", "safetensors", "huggingface_hub"):
        try:
            info[name] = __import__(name).__version__
        except Exception as exc:  # noqa: BLE001
            info[name] = f"unavailable ({type(exc).__name__})"
    if CUDA:
        props = torch.cuda.get_device_properties(0)
        info["gpu_memory_gib"] = round(props.total_memory / GIB, 1)
        info["sm_count"] = props.multi_processor_count
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--tiny", action="store_true", help="tiny architecture (smoke test)")
    parser.add_argument("--budget-s", type=float, default=540.0, help="skip optional runs past this wall time")
    parser.add_argument("--skip", default="", help="comma list of sections to skip: naive,infer,bf16,nf4,upcast")
    parser.add_argument("--profile", action="store_true",
                        help="instead of the sweeps: kernel breakdown of the scorer and candidate speed-ups")
    parser.add_argument("--profile-batch", type=int, default=512)
    args = parser.parse_args()
    transformers.utils.logging.disable_progress_bar()
    clock = Clock(args.budget_s)
    skip = set(filter(None, args.skip.split(",")))
    tiny = args.tiny
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = ("smoke_tiny" if tiny else "gpu_throughput_7b") + ("_profile" if args.profile else "") + ("" if CUDA else "_cpu")
    out_file = out_dir / f"{name}.json"
    workdir = Path(tempfile.mkdtemp(prefix="qvad_bench_"))

    params = load_params(REPO / "params.yaml")
    lora_cfg = dict(params["lora"])
    prompt_cfg = dict(params.get("prompt") or {})
    trunc_multiple = int(params["model"].get("truncate_multiple", 20))

    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(),
        "targets": TARGETS,
        "naive_baselines_from_notes": NAIVE_NOTES,
        "lora": lora_cfg,
        "truncate_multiple": trunc_multiple,
        "inference": [],
        "training": [],
        "notes": [],
    }

    def save() -> None:
        report["elapsed_s"] = round(clock.elapsed(), 1)
        out_file.write_text(json.dumps(report, indent=2, default=str) + "\n")

    log(f"environment: {report['environment']}")
    processor = make_processor()
    config = make_config(processor, tiny)
    one_s, box = one_second_clips(1, 0)[0], container_clips(1, 0)[0]
    report["prompt_tokens"] = {"1s": tokens_per_clip(processor, one_s, prompt_cfg),
                               "2s_container": tokens_per_clip(processor, box, prompt_cfg)}
    start = time.perf_counter()
    state, counts = random_state_dict(config)
    report["parameters"] = counts
    report["build_s"] = round(time.perf_counter() - start, 1)
    log(f"built random weights: {counts} in {report['build_s']} s; tokens {report['prompt_tokens']}")
    loader = Loader(config, processor, state, workdir, tiny)
    report["loader_notes"] = loader.notes
    save()

    small = tiny or not CUDA
    infer_batches = [8, 16] if small else [64, 128, 256, 512]
    steps, warm = (3, 1) if small else (8, 2)

    # ---------------------------------------------------------------- bf16: inference + LoRA
    model, proc = loader.load("bf16", for_training=False)
    report["attn_implementation"] = {
        "text": model.config.text_config._attn_implementation,
        "audio": model.config.audio_config._attn_implementation,
    }
    report["weights_gib_bf16"] = allocated_gib()
    report["fused_rms_norm_modules"] = sum(
        1 for m in model.modules() if type(m).__name__ == "Qwen2RMSNorm" and "forward" in m.__dict__)
    log(f"bf16 model loaded ({loader.notes[-1]}); {report['weights_gib_bf16']} GiB; attn {report['attn_implementation']}")
    save()
    if args.profile:
        run_profile(report, model, proc, prompt_cfg, clock, save, 8 if small else args.profile_batch, tiny)
        report["summary"] = {"profile": True}
        save()
        print(json.dumps(report["profile"], default=str)[:6000])
        log(f"wrote {out_file}")
        return
    if "infer" not in skip:
        try:
            report["inference_checks"] = inference_checks(model, proc, prompt_cfg)
            log(f"checks: {report['inference_checks']}")
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            report["inference_checks"] = {"error": f"{type(exc).__name__}: {exc}"}
        save()

        def run_infer(label: str, clips_fn, batch: int, **kw) -> None:
            n = max(4 * batch, 16 if small else 384)
            try:
                row = {"config": label, **kw, **time_scorer(model, proc, clips_fn(n, 5), batch, prompt_cfg, DEVICE)}
            except Exception as exc:  # noqa: BLE001
                if not is_oom(exc):
                    traceback.print_exc()
                row = {"config": label, "batch": batch, "error": "OOM" if is_oom(exc) else f"{type(exc).__name__}: {exc}"}
                cleanup()
            report["inference"].append(row)
            log(f"{label}: {row}")
            save()

        if "naive" not in skip:
            disable_encoder_truncation(model)
            for batch in ([8] if small else [8, 64]):
                n = max(3 * batch, 16 if small else 192)
                try:
                    row = {"config": "naive_hf_30s_full_logits_1s", **time_naive(model, proc, one_second_clips(n, 5),
                                                                                  batch, prompt_cfg)}
                except Exception as exc:  # noqa: BLE001
                    row = {"config": "naive_hf_30s_full_logits_1s", "batch": batch, "error": f"{type(exc).__name__}: {exc}"}
                    cleanup()
                report["inference"].append(row)
                log(f"naive: {row}")
                save()
            enable_encoder_truncation(model, trunc_multiple)

        for batch in infer_batches:
            run_infer("scorer_1s", one_second_clips, batch)
        best_1s = best(report["inference"], "scorer_1s")
        b = best_1s["batch"] if best_1s else infer_batches[0]
        for batch in sorted({b, infer_batches[-1]}):
            run_infer("scorer_2s_container", container_clips, batch)
        # attributions at the best 1 s batch
        scoring.PREFIX_CACHE = False
        run_infer("scorer_1s_no_prefix_cache", one_second_clips, b)
        scoring.PREFIX_CACHE = True
        collate_mod.USE_DEVICE_MEL = False
        run_infer("scorer_1s_processor_mel_gpu", one_second_clips, b)
        collate_mod.USE_DEVICE_MEL = True

    if "bf16" not in skip:
        model.config.text_config.use_cache = False  # what load_model_and_processor(for_training=True) sets
        peft_model, lora_counts = apply_lora(model, lora_cfg, "tiny" if tiny else PRESET)
        enable_encoder_truncation(peft_model, trunc_multiple)
        report["lora_parameters"] = lora_counts
        rows = report["training"]
        est = 20 if small else 30
        batches_1s = [4, 8] if small else [16, 32, 48, 64, 80]
        sweep_training(rows, "lora_bf16_1s", peft_model, proc, one_second_clips, batches_1s, prompt_cfg, workdir,
                       clock, est, steps, warm)
        save()
        top = best(rows, "lora_bf16_1s")
        if top:
            sweep_training(rows, "lora_bf16_2s_container", peft_model, proc, container_clips,
                           [top["batch"]] if small else sorted({max(16, top["batch"] // 2), top["batch"]}),
                           prompt_cfg, workdir, clock, est, steps, warm)
            save()
            if clock.have(est + 200):
                sweep_training(rows, "lora_bf16_1s_batches_on_gpu_no_pin", peft_model, proc, one_second_clips,
                               [top["batch"]], prompt_cfg, workdir, clock, est, steps, warm, on_device=True)
                save()
        if "naive" not in skip and clock.have(est + 180):
            # the notes' naive setup: 30 s encoder, gradient checkpointing, processor mel (CPU), batch 16
            disable_encoder_truncation(peft_model)
            set_checkpointing(peft_model, True)
            collate_mod.USE_DEVICE_MEL = False
            try:
                sweep_training(rows, "naive_lora_bf16_1s_ckpt_30s_cpu_mel", peft_model, proc, one_second_clips,
                               [4] if small else [16], prompt_cfg, workdir, clock, est, steps, warm,
                               feature_device=None)
            finally:
                collate_mod.USE_DEVICE_MEL = True
                set_checkpointing(peft_model, False)
                enable_encoder_truncation(peft_model, trunc_multiple)
            save()
        del peft_model
    del model
    cleanup()

    # ---------------------------------------------------------------- NF4: QLoRA
    if "nf4" not in skip:
        try:
            model, proc = loader.load("nf4", for_training=True)
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            report["nf4_error"] = f"{type(exc).__name__}: {exc}"
            model = None
        if model is not None:
            state.clear()
            cleanup()
            kinds = {}
            for mod_name, mod in model.named_modules():
                if isinstance(mod, torch.nn.Linear):
                    part = "language_model" if mod_name.startswith("model.language_model.") else mod_name.split(".")[0:2][-1]
                    kinds.setdefault(part, set()).add(type(mod).__name__)
            report["nf4_linear_types"] = {k: sorted(v) for k, v in kinds.items()}
            report["weights_gib_nf4"] = allocated_gib()
            log(f"nf4 loaded ({loader.notes[-1]}): {report['weights_gib_nf4']} GiB; {report['nf4_linear_types']}")
            peft_model, _ = apply_lora(model, lora_cfg, "tiny" if tiny else PRESET)
            enable_encoder_truncation(peft_model, trunc_multiple)
            rows = report["training"]
            cap = TARGETS["qlora_nf4_peak_gib"]
            est = 25 if small else 35
            sweep_training(rows, "qlora_nf4_1s", peft_model, proc, one_second_clips,
                           [4] if small else [8, 12, 16, 24], prompt_cfg, workdir, clock, est, steps, warm, cap_gib=cap)
            save()
            set_checkpointing(peft_model, True)
            sweep_training(rows, "qlora_nf4_1s_ckpt", peft_model, proc, one_second_clips,
                           [4] if small else [32, 48, 64, 96], prompt_cfg, workdir, clock, est, steps, warm, cap_gib=cap)
            set_checkpointing(peft_model, False)
            save()
            cands = [r for r in (best(rows, "qlora_nf4_1s", cap), best(rows, "qlora_nf4_1s_ckpt", cap)) if r]
            if cands:
                top = max(cands, key=lambda r: r["clips_per_s"])
                ckpt = top["config"].endswith("_ckpt")
                set_checkpointing(peft_model, ckpt)
                label = "qlora_nf4_2s_container" + ("_ckpt" if ckpt else "")
                b = top["batch"]
                sweep_training(rows, label, peft_model, proc, container_clips,
                               [b] if small else sorted({max(4, (3 * b) // 4), b}), prompt_cfg, workdir, clock, est,
                               steps, warm)
                set_checkpointing(peft_model, False)
                save()
            if "upcast" not in skip and clock.have(est + 60):
                # peft's prepare_model_for_kbit_training cast (non-4-bit weights to float32), for comparison
                for p in peft_model.parameters():
                    if p.dtype in (torch.bfloat16, torch.float16) and type(p).__name__ != "Params4bit":
                        p.data = p.data.to(torch.float32)
                cleanup()
                set_checkpointing(peft_model, True)
                sweep_training(rows, "qlora_nf4_1s_ckpt_fp32_upcast", peft_model, proc, one_second_clips,
                               [4] if small else [16, 32], prompt_cfg, workdir, clock, est, steps, warm, cap_gib=cap)
                set_checkpointing(peft_model, False)
                save()
            del peft_model, model
            cleanup()

    report["summary"] = summarize(report)
    if tiny:
        report["summary"]["targets_met"] = "n/a: tiny architecture (smoke test)"
    save()
    print_table(report)
    print(json.dumps({k: report.get(k) for k in ("summary", "inference_checks", "loader_notes", "prompt_tokens",
                                                "weights_gib_bf16", "weights_gib_nf4", "elapsed_s")}, default=str))
    log(f"wrote {out_file}")


def summarize(report: dict) -> dict:
    inf, tr = report["inference"], report["training"]
    cap = TARGETS["qlora_nf4_peak_gib"]
    pick = {
        "inference_1s": best(inf, "scorer_1s"),
        "inference_2s_container": best(inf, "scorer_2s_container"),
        "naive_inference_1s": best(inf, "naive_hf_30s_full_logits_1s"),
        "lora_bf16_1s": best(tr, "lora_bf16_1s"),
        "lora_bf16_2s_container": best(tr, "lora_bf16_2s_container"),
        "naive_lora_bf16_1s": best(tr, "naive_lora_bf16_1s_ckpt_30s_cpu_mel"),
        "qlora_nf4_1s": max([r for r in (best(tr, "qlora_nf4_1s", cap), best(tr, "qlora_nf4_1s_ckpt", cap)) if r],
                            key=lambda r: r["clips_per_s"], default=None),
        "qlora_nf4_2s_container": max([r for r in (best(tr, "qlora_nf4_2s_container", cap),
                                                   best(tr, "qlora_nf4_2s_container_ckpt", cap)) if r],
                                      key=lambda r: r["clips_per_s"], default=None),
        "qlora_nf4_fp32_upcast_1s": best(tr, "qlora_nf4_1s_ckpt_fp32_upcast", cap),
    }
    met = {}
    if pick["inference_1s"]:
        met["inference"] = pick["inference_1s"]["clips_per_s"] >= TARGETS["inference"]
    if pick["lora_bf16_1s"]:
        met["lora_bf16"] = pick["lora_bf16_1s"]["clips_per_s"] >= TARGETS["lora_bf16"]
    if pick["qlora_nf4_1s"]:
        met["qlora_nf4"] = (pick["qlora_nf4_1s"]["clips_per_s"] >= TARGETS["qlora_nf4"]
                            and pick["qlora_nf4_1s"].get("peak_alloc_gib", 0) <= cap)
    return {"best": pick, "targets_met": met}


def print_table(report: dict) -> None:
    print("\n| config | batch | clips/s | peak alloc GiB |")
    print("|---|---|---|---|")
    for row in report["inference"] + report["training"]:
        value = row.get("clips_per_s", row.get("error", row.get("skipped", "")))
        print(f"| {row['config']} | {row.get('batch')} | {value} | {row.get('peak_alloc_gib', '')} |")
    print(f"\ntargets met: {report['summary']['targets_met']}")


if __name__ == "__main__":
    main()
