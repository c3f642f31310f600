"""Training: the train stage's step (HF Trainer) timed for LoRA bf16 and QLoRA NF4, as sweeps."""

from __future__ import annotations

import contextlib
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from qvad.model.collate import ABCollator
from qvad.model.encoder_truncation import disable_encoder_truncation, enable_encoder_truncation
from qvad.model.lora import apply_lora
from qvad.model.trainer import AugmentingCollator

from .common import (
    CUDA,
    DEVICE,
    TARGETS,
    Bench,
    Loader,
    allocated_gib,
    best,
    cleanup,
    container_clips,
    failure_row,
    log,
    one_second_clips,
    peak,
    reset_peak,
    sync,
)


# --------------------------------------------------------------------------------------------
# one measurement (the HF Trainer, as stages/train.py drives it)
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


def training_arguments(workdir: Path, batch: int, steps: int, on_device: bool) -> TrainingArguments:
    return TrainingArguments(
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


def _reset_model(peft_model, own_forward) -> None:
    """Undo the Trainer's traces: accelerate's forward wrapper (autocast) and the gradients."""
    if own_forward is None:
        peft_model.__dict__.pop("forward", None)
    else:
        peft_model.forward = own_forward
    for p in peft_model.parameters():
        p.grad = None


def time_training(peft_model, processor, clips_fn: Callable[[int, int], list], batch: int, prompt_cfg,
                  workdir: Path, steps: int, warm: int, feature_device: str | None = DEVICE,
                  on_device: bool = False, device_mel: bool = True) -> dict:
    """Clips/s of optimizer steps ``warm+1 .. steps``; ``device_mel`` goes to ``ABCollator``."""
    clips = clips_fn(batch * steps, 11)
    base = ABCollator(processor, prompt_cfg, feature_device, device_mel=device_mel)
    base.train_batches_on_device = on_device
    clock = StepClock(warm)
    own_forward = peft_model.__dict__.get("forward")  # accelerate wraps forward (autocast); undone below
    trainer = Trainer(model=peft_model, args=training_arguments(workdir, batch, steps, on_device),
                      train_dataset=ClipList(clips), data_collator=AugmentingCollator(base, False, 0),
                      processing_class=processor, callbacks=[clock])
    reset_peak()
    try:
        trainer.train()
        seconds = clock.t1 - clock.t0
        return {"batch": batch, "steps_timed": steps - warm, "seconds": round(seconds, 3),
                "clips_per_s": round(batch * (steps - warm) / seconds, 1), **peak()}
    finally:
        del trainer
        _reset_model(peft_model, own_forward)
        cleanup()


def sweep_training(bench: Bench, label: str, peft_model, processor, clips_fn, batches, est_s: float,
                   cap_gib: float | None = None, steps_warm: tuple[int, int] | None = None,
                   workdir: Path | None = None, **kw) -> None:
    """Ascending batch sizes into ``report['training']``; stops at the first OOM (or peak over ``cap_gib``).

    ``steps_warm`` and ``workdir`` default to the bench's; ``kw`` goes to :func:`time_training`.
    """
    steps, warm = steps_warm or bench.steps_warm
    for batch in batches:
        if not bench.clock.have(est_s):
            bench.report["training"].append({"config": label, "batch": batch, "skipped": "time budget"})
            log(f"{label} batch {batch}: skipped (time budget)")
            continue
        try:
            row = {"config": label, **time_training(peft_model, processor, clips_fn, batch, bench.prompt_cfg,
                                                    workdir or bench.workdir, steps, warm, **kw)}
        except Exception as exc:  # noqa: BLE001
            row = failure_row(label, batch, exc)
            cleanup()
        bench.add("training", row, label, save=False)
        if "error" in row or (cap_gib is not None and row.get("peak_alloc_gib", 0) > cap_gib):
            break


def set_checkpointing(peft_model, on: bool) -> None:
    inner = peft_model.get_base_model()
    if on:
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        inner.gradient_checkpointing_disable()


@contextlib.contextmanager
def checkpointing(peft_model, on: bool = True):
    """Gradient checkpointing ``on`` inside the block, off after it."""
    set_checkpointing(peft_model, on)
    try:
        yield
    finally:
        set_checkpointing(peft_model, False)


def add_lora(bench: Bench, model):
    """LoRA per params.yaml's lora.*, encoder truncation on; returns (peft model, parameter counts)."""
    peft_model, counts = apply_lora(model, bench.lora_cfg, bench.preset)
    enable_encoder_truncation(peft_model, bench.trunc_multiple)
    return peft_model, counts


# --------------------------------------------------------------------------------------------
# LoRA bf16
def _bf16_followups(bench: Bench, peft_model, proc, top_batch: int, est: float) -> None:
    """2 s containers at (half) the best 1 s batch; the best batch with its batches kept on the GPU."""
    batches = [top_batch] if bench.small else sorted({max(16, top_batch // 2), top_batch})
    sweep_training(bench, "lora_bf16_2s_container", peft_model, proc, container_clips, batches, est)
    bench.save()
    if bench.clock.have(est + 200):
        sweep_training(bench, "lora_bf16_1s_batches_on_gpu_no_pin", peft_model, proc, one_second_clips,
                       [top_batch], est, on_device=True)
        bench.save()


def _naive_bf16(bench: Bench, peft_model, proc, est: float) -> None:
    """The notes' naive setup: 30 s encoder, gradient checkpointing, processor mel (CPU), batch 16."""
    disable_encoder_truncation(peft_model)
    try:
        with checkpointing(peft_model):
            sweep_training(bench, "naive_lora_bf16_1s_ckpt_30s_cpu_mel", peft_model, proc, one_second_clips,
                           [4] if bench.small else [16], est, feature_device=None, device_mel=False)
    finally:
        enable_encoder_truncation(peft_model, bench.trunc_multiple)
    bench.save()


def lora_bf16_section(bench: Bench, model, proc) -> None:
    """LoRA on the loaded bf16 model: 1 s batch sweep, then follow-ups at the best batch, then naive."""
    model.config.text_config.use_cache = False  # what load_model_and_processor(for_training=True) sets
    peft_model, lora_counts = add_lora(bench, model)
    bench.report["lora_parameters"] = lora_counts
    est = 20 if bench.small else 30
    batches_1s = [4, 8] if bench.small else [16, 32, 48, 64, 80]
    sweep_training(bench, "lora_bf16_1s", peft_model, proc, one_second_clips, batches_1s, est)
    bench.save()
    top = best(bench.report["training"], "lora_bf16_1s")
    if top:
        _bf16_followups(bench, peft_model, proc, top["batch"], est)
    if "naive" not in bench.skip and bench.clock.have(est + 180):
        _naive_bf16(bench, peft_model, proc, est)


# --------------------------------------------------------------------------------------------
# QLoRA NF4
def nf4_linear_types(model) -> dict[str, list[str]]:
    """Linear module classes per part (language_model, audio_tower, ...): 4-bit or not."""
    kinds: dict[str, set] = {}
    for mod_name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            lm = mod_name.startswith("model.language_model.")
            part = "language_model" if lm else mod_name.split(".")[0:2][-1]
            kinds.setdefault(part, set()).add(type(mod).__name__)
    return {k: sorted(v) for k, v in kinds.items()}


def load_nf4(bench: Bench, loader: Loader):
    """The NF4 model and processor through the project's loader (None, None when that fails)."""
    try:
        model, proc = loader.load("nf4", for_training=True)
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        bench.report["nf4_error"] = f"{type(exc).__name__}: {exc}"
        return None, None
    loader.state.clear()
    cleanup()
    bench.report["nf4_linear_types"] = nf4_linear_types(model)
    bench.report["weights_gib_nf4"] = allocated_gib()
    log(f"nf4 loaded ({loader.notes[-1]}): {bench.report['weights_gib_nf4']} GiB; "
        f"{bench.report['nf4_linear_types']}")
    return model, proc


def _nf4_container(bench: Bench, peft_model, proc, est: float, cap: float) -> None:
    """2 s containers at the faster of the two 1 s setups (with or without checkpointing)."""
    rows = bench.report["training"]
    cands = [r for r in (best(rows, "qlora_nf4_1s", cap), best(rows, "qlora_nf4_1s_ckpt", cap)) if r]
    if not cands:
        return
    top = max(cands, key=lambda r: r["clips_per_s"])
    ckpt = top["config"].endswith("_ckpt")
    b = top["batch"]
    with checkpointing(peft_model, ckpt):
        sweep_training(bench, "qlora_nf4_2s_container" + ("_ckpt" if ckpt else ""), peft_model, proc,
                       container_clips, [b] if bench.small else sorted({max(4, (3 * b) // 4), b}), est)
    bench.save()


def _nf4_upcast(bench: Bench, peft_model, proc, est: float, cap: float) -> None:
    """peft's prepare_model_for_kbit_training cast (non-4-bit weights to float32), for comparison."""
    for p in peft_model.parameters():
        if p.dtype in (torch.bfloat16, torch.float16) and type(p).__name__ != "Params4bit":
            p.data = p.data.to(torch.float32)
    cleanup()
    with checkpointing(peft_model):
        sweep_training(bench, "qlora_nf4_1s_ckpt_fp32_upcast", peft_model, proc, one_second_clips,
                       [4] if bench.small else [16, 32], est, cap_gib=cap)
    bench.save()


def qlora_nf4_section(bench: Bench, loader: Loader) -> None:
    """QLoRA NF4: 1 s sweeps without and with checkpointing (peak capped), containers, fp32 upcast."""
    model, proc = load_nf4(bench, loader)
    if model is None:
        return
    peft_model, _ = add_lora(bench, model)
    cap = TARGETS["qlora_nf4_peak_gib"]
    est = 25 if bench.small else 35
    sweep_training(bench, "qlora_nf4_1s", peft_model, proc, one_second_clips,
                   [4] if bench.small else [8, 12, 16, 24], est, cap_gib=cap)
    bench.save()
    with checkpointing(peft_model):
        sweep_training(bench, "qlora_nf4_1s_ckpt", peft_model, proc, one_second_clips,
                       [4] if bench.small else [32, 48, 64, 96], est, cap_gib=cap)
    bench.save()
    _nf4_container(bench, peft_model, proc, est, cap)
    if "upcast" not in bench.skip and bench.clock.have(est + 60):
        _nf4_upcast(bench, peft_model, proc, est, cap)
    del peft_model, model
    cleanup()
