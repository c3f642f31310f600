"""The train stage: LoRA / QLoRA fine-tuning of Qwen2-Audio on the A/B speech question."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from qvad.common.atomic import write_json
from qvad.model.collate import ABCollator
from qvad.common.cpu_numerics import pin_cpu_numerics
from qvad.model.dataset import ClipDataset
from qvad.model import accel
from qvad.model.encoder_truncation import truncate_as_configured
from qvad.model.loading import load_model_and_processor
from qvad.model.lora import apply_lora, training_roles
from qvad.model.store import ADAPTER, base_cfg, device, prepare_base
from qvad.common.params import get, require
from qvad.model.trainer import (ABTrainer, AugmentingCollator, best_evaluation, prepare_checkpoint_dir, run_key,
                                training_arguments)
from qvad.model.training_log import StepDVCLiveCallback
from qvad.parallel.processes import check_processes
from qvad.parallel.group import broadcast_from_main, check_launched, training_group

CKPT = Path("models/checkpoints")
LIVE = Path("dvclive")
TIMING = Path("logs/train_timing.json")
"""Wall-clock figures: a log, not a tracked metric (they differ between runs of the same params)."""
SPLITS = [Path("data/splits/train.csv"), Path("data/splits/dev.csv")]


def check(cfg: dict) -> None:
    """Fail early, naming the key, on a training value that cannot work."""
    for key in ("epochs", "learning_rate", "batch_size", "grad_accum"):
        require(cfg[key] > 0, f"train.{key}", "must be > 0")
    check_processes({"train": cfg})
    require(cfg["eval_steps"] is None or cfg["eval_steps"] > 0, "train.eval_steps", "must be null (each epoch) or > 0")
    require(cfg["select_on"] in ("eval_loss", "eval_balanced_accuracy"), "train.select_on",
            "must be eval_loss or eval_balanced_accuracy")


def training_seed(params: dict) -> int:
    """``train.seed`` when set (training variance on the same data), else the global ``seed``."""
    value = get(params, "train.seed")
    require(value is None or isinstance(value, int), "train.seed", "must be null or an integer")
    return int(params["seed"] if value is None else value)


def final_train_loss(log_history: list[dict], mean_loss: float) -> float:
    """The last logged training loss; the run's mean loss when it ended before its first logging step
    (fewer than ``train.logging_steps`` optimiser steps, e.g. a few dozen clips: nothing was logged)."""
    losses = [row["loss"] for row in log_history if "loss" in row]
    return float(losses[-1] if losses else mean_loss)


def train(params: dict) -> None:
    """Run the train stage with ``params`` (params.yaml as a dict)."""
    cpu_kernels = pin_cpu_numerics(params["cpu_threads"])  # before any tensor work
    cfg, model_cfg, lora_cfg, prompt_cfg = (dict(get(params, k)) for k in ("train", "model", "lora", "prompt"))
    check(cfg)
    seed = training_seed(params)
    torch.manual_seed(seed)
    dev_name = device()
    check_launched(cfg["processes"])
    # First, so that under torchrun the process group exists (and this process's GPU is chosen)
    # before anything is loaded; rank 0 alone writes models/, metrics/, dvclive/ and checkpoints.
    args = training_arguments(cfg, CKPT, seed, use_cpu=dev_name == "cpu",
                              bf16=dev_name == "cuda" and model_cfg.get("dtype") == "bfloat16",
                              pin_memory=dev_name != "cuda", processes=cfg["processes"])
    group = training_group(args, cfg["processes"])
    with args.main_process_first(desc="models/base"):
        model_cfg = prepare_base(model_cfg, seed) if group.is_main else base_cfg(model_cfg)
    model, processor = load_model_and_processor(model_cfg, dev_name, for_training=True)
    model, counts = apply_lora(model, lora_cfg, model_cfg["preset"])
    truncate_as_configured(model, model_cfg)  # again after LoRA: peft's trainable copies of the tower too
    # Each process caches the clips it meets (measured against one shared cache: docs/multi_gpu.md).
    cache = accel.enable(model, dev_name, encoder_cache=bool(cfg["cache_frozen_encoder"])).encoder_cache

    train_set, dev_set = ClipDataset(SPLITS[0]), ClipDataset(SPLITS[1])
    run_params = {k: params[k] for k in ("seed", "cpu_threads", "train", "model", "lora", "prompt")}
    resume = broadcast_from_main(lambda: prepare_checkpoint_dir(CKPT, run_key(run_params, SPLITS)), group)
    resumed_step = int(resume.name.rsplit("-", 1)[1]) if resume else 0
    callbacks = [StepDVCLiveCallback(LIVE, resumed_step if resume else None)] if group.is_main else []
    collator = ABCollator(processor, prompt_cfg, feature_device=dev_name)
    # On a GPU the batch stays where its log-mel was computed (no copy to the host and back).
    collator.train_batches_on_device = dev_name == "cuda"
    trainer = ABTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=dev_set,
        data_collator=AugmentingCollator(collator, cfg["spec_augment"], seed),
        processing_class=processor,
        callbacks=callbacks,
        eval_collator=collator,
        prompt_cfg=prompt_cfg,
        score_batch=cfg["batch_size"] * 2,
    )
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    wall = time.perf_counter() - start
    trainer.accelerator.wait_for_everyone()  # every process has loaded the best checkpoint before rank 0 cleans up
    if not group.is_main:
        return
    best = best_evaluation(trainer.state.log_history, trainer.state.best_model_checkpoint)

    if ADAPTER.exists():
        shutil.rmtree(ADAPTER)
    trainer.model.save_pretrained(ADAPTER, safe_serialization=True)
    processor.save_pretrained(ADAPTER)
    made_by = {k: params[k] for k in ("seed", "model", "lora", "train", "prompt")}
    # How many processes shared the work is how it ran, not what it made (logs/train_timing.json has it).
    made_by["train"] = {k: v for k, v in made_by["train"].items() if k != "processes"}
    write_json(ADAPTER / "train_params.json", made_by)
    write_json("metrics/train.json", {
        "preset": model_cfg["preset"],
        "modules": training_roles(model),
        "steps": int(result.global_step),
        "resumed": resume is not None,
        "final_train_loss": round(final_train_loss(trainer.state.log_history, result.training_loss), 5),
        "best_dev_loss": round(float(best["eval_loss"]), 5),
        "best_dev_balanced_accuracy": round(float(best["eval_balanced_accuracy"]), 5),
        "best_checkpoint": Path(trainer.state.best_model_checkpoint or "").name,
        "trainable_parameters": {k: int(v) for k, v in counts.items()},
        "device": dev_name,
        "cpu_kernels": cpu_kernels,
    })
    clips = (int(result.global_step) - resumed_step) * cfg["batch_size"] * cfg["grad_accum"]
    write_json(TIMING, {"train_wall_s": round(wall, 2), "steps_this_run": int(result.global_step) - resumed_step,
                        "train_clips_per_second": round(clips / wall, 3), "device": dev_name,
                        "processes": group.size})
    print(f"train: {wall:.1f} s for {int(result.global_step) - resumed_step} steps "
          f"({clips / wall:.1f} clips/s on {dev_name} x {group.size})"
          + (f"; frozen-encoder cache: {cache.misses} clips encoded, {cache.hits} reused" if cache else ""))
    shutil.rmtree(CKPT, ignore_errors=True)

