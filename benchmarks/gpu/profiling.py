"""``--profile``: kernel breakdown of the scorer, and candidate speed-ups measured against it."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from qvad.model.collate import ABCollator
from qvad.model.encoder_truncation import enable_encoder_truncation
from qvad.model.loading import use_fused_rms_norm
from qvad.model.scoring import score_ab_logits

from .common import CUDA, DEVICE, Bench, container_clips, log, one_second_clips, sync
from .inference import time_scorer
from .training import add_lora, sweep_training

ACTIVITIES = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if CUDA else [])
KERNEL_CATEGORIES = (  # first match wins; the rest is "elementwise/reduce/other"
    ("attention", ("fmha", "flash", "attention", "efficient")),
    ("matmul", ("gemm", "nvjet", "xmma", "cutlass", "cublas", "sm90_", "wgmma")),
    ("fft", ("fft",)),
    ("copy/cat/fill", ("copy", "cat", "memcpy", "memset", "fill")),
    ("conv", ("conv", "implicit")),
)


def stock_rms_norm(model: torch.nn.Module) -> int:
    """Undo qvad.model.loading.use_fused_rms_norm (for A/B measurements)."""
    count = 0
    for module in model.modules():
        if type(module).__name__ == "Qwen2RMSNorm" and "forward" in module.__dict__:
            del module.forward
            count += 1
    return count


def kernel_category(key: str) -> str:
    k = key.lower()
    for name, words in KERNEL_CATEGORIES:
        if any(w in k for w in words):
            return name
    return "elementwise/reduce/other"


def kernel_breakdown(prof, wall_s: float) -> dict:
    """GPU kernel time by category and the top kernels, from a torch.profiler run."""
    cuda = torch.autograd.DeviceType.CUDA
    rows = [(e.key, e.self_device_time_total, e.count) for e in prof.key_averages()
            if e.device_type == cuda and e.self_device_time_total > 0]
    total = sum(t for _, t, _ in rows)
    cats: dict[str, float] = {}
    for key, t, _ in rows:
        cat = kernel_category(key)
        cats[cat] = cats.get(cat, 0.0) + t
    top = sorted(rows, key=lambda r: -r[1])[:25]
    return {
        "wall_s": round(wall_s, 3),
        "gpu_kernel_s": round(total / 1e6, 3),
        "gpu_busy_fraction": round(total / 1e6 / wall_s, 3),
        "by_category_s": {k: round(v / 1e6, 3) for k, v in sorted(cats.items(), key=lambda kv: -kv[1])},
        "top_kernels": [{"kernel": k[:110], "s": round(t / 1e6, 4), "calls": c} for k, t, c in top],
    }


def scorer_kernels(model, proc, clips, prompt_cfg, batch: int, warm_up: bool) -> dict:
    """Kernel breakdown of one scorer pass over ``clips``.

    ``warm_up``: score one batch first and start the wall clock before the profiler does (the
    baseline); otherwise the clock starts inside the profiler (the fused-RMSNorm candidate).
    """
    def score() -> None:
        score_ab_logits(model, proc, clips, prompt_cfg, batch, DEVICE)
        sync()

    if warm_up:
        score_ab_logits(model, proc, clips[:batch], prompt_cfg, batch, DEVICE)
        sync()
        start = time.perf_counter()
        with profile(activities=ACTIVITIES) as prof:
            score()
    else:
        with profile(activities=ACTIVITIES) as prof:
            start = time.perf_counter()
            score()
    return kernel_breakdown(prof, time.perf_counter() - start)


class Profiler:
    """The ``--profile`` run on one loaded bf16 model; results in ``report['profile']``."""

    def __init__(self, bench: Bench, model, proc, batch: int) -> None:
        self.bench, self.model, self.proc, self.batch = bench, model, proc, batch
        self.rows = bench.report.setdefault("profile", {})
        self.n = batch * (1 if bench.tiny else 3)
        self.clips = one_second_clips(self.n, 5)

    def timed(self, label: str, fn_clips=one_second_clips, b: int | None = None) -> dict:
        b = self.batch if b is None else b
        clips = fn_clips(max(self.n, 3 * b), 5)
        row = {"config": label, **time_scorer(self.model, self.proc, clips, b, self.bench.prompt_cfg, DEVICE)}
        self.bench.add("inference", row, label)
        return row

    def host_and_encoder(self) -> None:
        """Seconds per batch of the collator alone (host side) and of the encoder alone."""
        col = ABCollator(self.proc, self.bench.prompt_cfg, DEVICE)
        chunk = self.clips[: self.batch]
        col.prompt_batch(chunk)
        sync()
        start = time.perf_counter()
        for _ in range(3):
            col.prompt_batch(chunk)
        sync()
        self.rows["collate_one_batch_s"] = round((time.perf_counter() - start) / 3, 4)
        self.rows["encoder_one_batch_s"] = self.encoder_seconds(col.prompt_batch(chunk)["input_features"])
        log(f"collate {self.rows['collate_one_batch_s']} s, encoder {self.rows['encoder_one_batch_s']} s per batch")

    def encoder_seconds(self, feats: torch.Tensor) -> float:
        """The audio tower on the truncated mel of one batch (120 frames; all of them when tiny)."""
        keep = 120 if not self.bench.tiny else feats.shape[-1]
        tower = self.model.model.audio_tower
        x = feats[..., :keep].to(next(tower.parameters()).dtype).contiguous()
        with torch.inference_mode():
            tower(x)
            sync()
            start = time.perf_counter()
            for _ in range(3):
                tower(x)
            sync()
        return round((time.perf_counter() - start) / 3, 4)

    def fused_rms_norm(self) -> None:
        """Candidate: torch's fused RMSNorm; logit change on 64 clips, speed and kernels."""
        model, proc, cfg = self.model, self.proc, self.bench.prompt_cfg
        ref = score_ab_logits(model, proc, self.clips[:64], cfg, 64, DEVICE)
        self.rows["fused_rmsnorm_modules"] = use_fused_rms_norm(model)
        new = score_ab_logits(model, proc, self.clips[:64], cfg, 64, DEVICE)
        self.rows["fused_rmsnorm_max_abs_logit_diff"] = float(np.abs(new - ref).max())
        same = ((ref[:, 0] - ref[:, 1]) > 0) == ((new[:, 0] - new[:, 1]) > 0)
        self.rows["fused_rmsnorm_same_decisions"] = bool(same.all())
        self.timed("profile_fused_rmsnorm_scorer_1s")
        self.rows["scorer_kernels_fused_rmsnorm"] = scorer_kernels(model, proc, self.clips, cfg, self.batch, False)
        self.bench.save()

    def other_candidates(self) -> None:
        """Candidates on top of the fused norm: tightest encoder cut, cuDNN autotuning; 2 s containers."""
        # tightest encoder cut (multiple 2: 104 frames for 1 s instead of 120)
        enable_encoder_truncation(self.model, 2)
        self.timed("profile_fused_rmsnorm_trunc2_scorer_1s")
        enable_encoder_truncation(self.model, self.bench.report["truncate_multiple"])
        # cuDNN autotuning for the two encoder convolutions
        torch.backends.cudnn.benchmark = True
        self.timed("profile_fused_rmsnorm_cudnn_benchmark_scorer_1s")
        torch.backends.cudnn.benchmark = False
        self.timed("profile_fused_rmsnorm_scorer_2s_container", container_clips)

    def training_gain(self) -> None:
        """Does training gain too? LoRA bf16, 1 s clips, same batch, with and without the fused norm."""
        tiny = self.bench.tiny
        self.model.config.text_config.use_cache = False
        peft_model, _ = add_lora(self.bench, self.model)
        workdir = Path(tempfile.mkdtemp(prefix="qvad_prof_"))
        for label in ("profile_fused_rmsnorm_lora_bf16_1s", "profile_hf_rmsnorm_lora_bf16_1s"):
            if label.startswith("profile_hf"):
                stock_rms_norm(self.model)
            sweep_training(self.bench, label, peft_model, self.proc, one_second_clips, [8 if tiny else 64], 30,
                           steps_warm=(3, 1) if tiny else (8, 2), workdir=workdir)
            self.bench.save()


def run_profile(bench: Bench, model, proc, batch: int) -> None:
    """Stock-norm baseline, its host/encoder/kernel split, then the candidates, each measured."""
    prof = Profiler(bench, model, proc, batch)
    prof.rows["stock_rmsnorm_modules"] = stock_rms_norm(model)
    prof.timed("profile_baseline_scorer_1s")
    prof.host_and_encoder()
    prof.rows["scorer_kernels"] = scorer_kernels(model, proc, prof.clips, bench.prompt_cfg, batch, True)
    log(f"kernels: {json.dumps(prof.rows['scorer_kernels'])[:3000]}")
    bench.save()
    prof.fused_rms_norm()
    prof.other_candidates()
    if bench.clock.have(90):
        prof.training_gain()
    bench.save()
