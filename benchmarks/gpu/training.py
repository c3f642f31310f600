"""Training: the train stage's step (qvad.model.trainer.AnswerLossTrainer) for LoRA bf16 and QLoRA
NF4 in both prompt layouts, against the landed step and the naive HF setup in the same run."""

from __future__ import annotations

import contextlib
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from transformers import TrainerCallback, TrainingArguments

from qvad.model import accel
from qvad.model.collate import ABCollator
from qvad.model.encoder_truncation import disable_encoder_truncation, enable_encoder_truncation
from qvad.model.lora import apply_lora
from qvad.model.trainer import AnswerLossTrainer, AugmentingCollator

from .inference import scorer_row
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


QFIRST = {"audio_position": "after_question"}
LANDED = {"answer_loss": False, "shared_prefix": False, "on_device": False, "stock_attention": True}
"""The landed step: the stock forward's loss, stock attention, batches collated to the host and pinned."""


def time_training(peft_model, processor, clips_fn: Callable[[int, int], list], batch: int, prompt_cfg,
                  workdir: Path, steps: int, warm: int, feature_device: str | None = DEVICE,
                  on_device: bool = True, device_mel: bool = True, answer_loss: bool = True,
                  shared_prefix: bool = True, stock_attention: bool = False) -> dict:
    """Clips/s of optimizer steps ``warm+1 .. steps``. ``device_mel`` goes to ``ABCollator``;
    ``answer_loss``/``shared_prefix`` to the Trainer; ``on_device`` keeps batches on the GPU
    (as the train stage does on CUDA); ``stock_attention`` times transformers' attention forward."""
    clips = clips_fn(batch * steps, 11)
    base = ABCollator(processor, prompt_cfg, feature_device, device_mel=device_mel)
    base.train_batches_on_device = on_device and feature_device is not None and CUDA
    clock = StepClock(warm)
    own_forward = peft_model.__dict__.get("forward")  # accelerate wraps forward (autocast); undone below
    if stock_attention:
        accel.disable(peft_model, "attention")
    trainer = AnswerLossTrainer(model=peft_model, args=training_arguments(workdir, batch, steps,
                                                                          base.train_batches_on_device),
                                train_dataset=ClipList(clips), data_collator=AugmentingCollator(base, False, 0),
                                processing_class=processor, callbacks=[clock], answer_loss=answer_loss,
                                shared_prefix=shared_prefix)
    reset_peak()
    try:
        trainer.train()
        seconds = clock.t1 - clock.t0
        return {"batch": batch, "steps_timed": steps - warm, "seconds": round(seconds, 3),
                "clips_per_s": round(batch * (steps - warm) / seconds, 1), **peak()}
    finally:
        del trainer
        _reset_model(peft_model, own_forward)
        if stock_attention:
            accel.enable(peft_model, DEVICE, attention=True)
        cleanup()


def sweep_training(bench: Bench, label: str, peft_model, processor, clips_fn, batches, est_s: float,
                   cap_gib: float | None = None, steps_warm: tuple[int, int] | None = None,
                   workdir: Path | None = None, prompt_cfg: dict | None = None, **kw) -> None:
    """Ascending batch sizes into ``report['training']``; stops at the first OOM (or peak over ``cap_gib``).

    ``steps_warm``, ``workdir`` and ``prompt_cfg`` default to the bench's; ``kw`` goes to
    :func:`time_training`. Each row gets its FLOPs per clip, limit and MFU.
    """
    steps, warm = steps_warm or bench.steps_warm
    cfg = bench.prompt_cfg if prompt_cfg is None else prompt_cfg
    for batch in batches:
        if not bench.clock.have(est_s):
            bench.report["training"].append({"config": label, "batch": batch, "skipped": "time budget"})
            log(f"{label} batch {batch}: skipped (time budget)")
            continue
        try:
            row = {"config": label, **time_training(peft_model, processor, clips_fn, batch, cfg,
                                                    workdir or bench.workdir, steps, warm, **kw)}
        except Exception as exc:  # noqa: BLE001
            row = failure_row(label, batch, exc)
            cleanup()
        bench.add("training", bench.with_flops(row, "train", clips_fn, cfg), label, save=False)
        if "error" in row or (cap_gib is not None and row.get("peak_alloc_gib", 0) > cap_gib):
            break


def set_checkpointing(peft_model, on: bool) -> None:
    inner = peft_model.get_base_model()
    if on:
        inner.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        inner.activation_checkpointing_disable()


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
def _naive_bf16(bench: Bench, peft_model, proc, est: float) -> None:
    """The notes' naive setup: stock step, 30 s encoder, gradient checkpointing, processor mel (CPU), batch 16."""
    disable_encoder_truncation(peft_model)
    try:
        with checkpointing(peft_model):
            sweep_training(bench, "naive_lora_bf16_1s_ckpt_30s_cpu_mel", peft_model, proc, one_second_clips,
                           [4] if bench.small else [16], est, feature_device=None, device_mel=False, **LANDED)
    finally:
        enable_encoder_truncation(peft_model, bench.trunc_multiple)
    bench.save()


def lora_bf16_section(bench: Bench, model, proc) -> None:
    """LoRA on the loaded bf16 model: the step in both layouts and on 2 s containers, the landed
    step and attributions at the best 1 s batch, then the naive setup."""
    model.config.text_config.use_cache = False  # what load_model_and_processor(for_training=True) sets
    peft_model, lora_counts = add_lora(bench, model)
    bench.report["lora_parameters"] = lora_counts
    small = bench.small
    # the evaluate stage scores the adapted model: the scorer with the LoRA layers in its path
    scorer_row(bench, peft_model, proc, "scorer_1s_with_lora_adapter", one_second_clips, 8 if small else 512)
    est = 20 if small else 30
    qfirst = {**bench.prompt_cfg, **QFIRST}
    sweep_training(bench, "landed_lora_bf16_1s", peft_model, proc, one_second_clips, [4] if small else [64], est,
                   **LANDED)
    sweep_training(bench, "lora_bf16_1s", peft_model, proc, one_second_clips, [4, 8] if small else [128, 256], est)
    bench.save()
    sweep_training(bench, "lora_bf16_1s_question_first", peft_model, proc, one_second_clips,
                   [8] if small else [256, 512], est, prompt_cfg=qfirst)
    sweep_training(bench, "lora_bf16_2s_container", peft_model, proc, container_clips,
                   [4] if small else [128], est)
    bench.save()
    b = 4 if small else 128  # attributions at a batch the stock loss fits (its logits OOM at 256)
    sweep_training(bench, "lora_bf16_1s_no_shared_prefix", peft_model, proc, one_second_clips, [b], est,
                   shared_prefix=False)
    sweep_training(bench, "lora_bf16_1s_stock_loss", peft_model, proc, one_second_clips, [b], est,
                   answer_loss=False, shared_prefix=False)
    bench.save()
    if "naive" not in bench.skip and bench.clock.have(est + 150):
        _naive_bf16(bench, peft_model, proc, est)
    return peft_model


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


def _nf4_upcast(bench: Bench, peft_model, proc, est: float, cap: float) -> None:
    """The naive QLoRA setup: peft's prepare_model_for_kbit_training cast (non-4-bit weights to
    float32) with the stock step and checkpointing (last: it changes the model)."""
    for p in peft_model.parameters():
        if p.dtype in (torch.bfloat16, torch.float16) and type(p).__name__ != "Params4bit":
            p.data = p.data.to(torch.float32)
    cleanup()
    with checkpointing(peft_model):
        sweep_training(bench, "naive_qlora_nf4_1s_ckpt_fp32_upcast", peft_model, proc, one_second_clips,
                       [4] if bench.small else [16], est, cap_gib=cap, **LANDED)
    bench.save()


def qlora_nf4_section(bench: Bench, loader: Loader) -> None:
    """QLoRA NF4: the step without and with checkpointing (peak capped at 16 GiB), question-first and
    2 s containers in the faster mode, the landed step, then the naive fp32-upcast setup."""
    model, proc = load_nf4(bench, loader)
    if model is None:
        return
    peft_model, _ = add_lora(bench, model)
    cap = TARGETS["qlora_nf4_peak_gib"]
    small = bench.small
    est = 25 if small else 35
    with checkpointing(peft_model):
        sweep_training(bench, "landed_qlora_nf4_1s_ckpt", peft_model, proc, one_second_clips,
                       [4] if small else [64], est, cap_gib=cap, **LANDED)
    sweep_training(bench, "qlora_nf4_1s", peft_model, proc, one_second_clips, [4] if small else [16],
                   est, cap_gib=cap)
    with checkpointing(peft_model):
        sweep_training(bench, "qlora_nf4_1s_ckpt", peft_model, proc, one_second_clips,
                       [4] if small else [128, 192, 224], est, cap_gib=cap)
    bench.save()
    rows = bench.report["training"]
    cands = [r for r in (best(rows, "qlora_nf4_1s", cap), best(rows, "qlora_nf4_1s_ckpt", cap)) if r]
    if cands:
        top = max(cands, key=lambda r: r["clips_per_s"])
        ckpt, b = top["config"].endswith("_ckpt"), top["batch"]
        suffix = "_ckpt" if ckpt else ""
        with checkpointing(peft_model, ckpt):
            sweep_training(bench, "qlora_nf4_1s_question_first" + suffix, peft_model, proc, one_second_clips,
                           [b] if small else sorted({b, (3 * b) // 2}), est, cap_gib=cap,
                           prompt_cfg={**bench.prompt_cfg, **QFIRST})
            sweep_training(bench, "qlora_nf4_2s_container" + suffix, peft_model, proc, container_clips,
                           [b] if small else [(2 * b) // 3], est, cap_gib=cap)
        bench.save()
    if "upcast" not in bench.skip and "naive" not in bench.skip and bench.clock.have(est + 30):
        _nf4_upcast(bench, peft_model, proc, est, cap)
    del peft_model, model
    cleanup()
