"""Fine-tuning with the Hugging Face Trainer: answer-token loss, dev-selected best adapter, resumable.

The Trainer gives checkpoints, resume, schedulers, accumulation and a progress bar for
free. Two things are ours: the collator (loss on the answer token only, see
qvad.model.collate) and evaluation, which adds dev balanced accuracy from the same lean A/B
scorer the evaluate stage uses, so "best" means best at the task, not just lowest loss.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch.nn.parallel import DistributedDataParallel
from transformers import Trainer, TrainingArguments

from qvad.model.answer_loss import answer_loss
from qvad.model.collate import ABCollator
from qvad.model.dataset import ClipDataset, spec_augment
from qvad.parallel.scoring import score_ab_logits
from qvad.analysis.metrics import balanced_accuracy
from qvad.parallel.processes import per_process_batch


class AugmentingCollator:
    """Training collator: ABCollator plus optional light SpecAugment (seeded)."""

    def __init__(self, base: ABCollator, enabled: bool, seed: int) -> None:
        self.base = base
        self.enabled = enabled
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, examples: list[dict]) -> Any:
        batch = self.base(examples)
        if self.enabled:
            valid = batch["feature_attention_mask"].sum(-1).cpu()  # per-row ints: read once, not per row
            batch["input_features"] = spec_augment(batch["input_features"], valid, self.generator)
        return batch


class AnswerLossTrainer(Trainer):
    """Trainer whose loss is :func:`qvad.model.answer_loss.answer_loss` (the stock loss's value,
    from the answer position only, prompt prefix shared); ``answer_loss=False`` keeps the stock
    forward. The Trainer's autocast, gradient accumulation and logging are unchanged."""

    def __init__(self, *args: Any, answer_loss: bool = True, shared_prefix: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.use_answer_loss = answer_loss
        self.shared_prefix = shared_prefix

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001, ANN201
        if not self.use_answer_loss:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        with self.accelerator.autocast():
            if isinstance(model, DistributedDataParallel):
                loss = _through_ddp(model, lambda inner: answer_loss(inner, inputs, self.shared_prefix))
            else:
                loss = answer_loss(self.accelerator.unwrap_model(model), inputs, self.shared_prefix)
        return (loss, {"loss": loss}) if return_outputs else loss


def _through_ddp(ddp: DistributedDataParallel, loss_of: Callable[[torch.nn.Module], torch.Tensor]) -> torch.Tensor:
    """``loss_of(module)`` computed inside DDP's forward, so that its backward all-reduces the gradients.

    DDP arms its gradient hooks (and honours ``no_sync`` during accumulation) only in its own
    ``forward``; :func:`answer_loss` calls the model's parts, not its ``forward``, so on the bare
    module each process would silently step on its own gradients. For this one call the wrapped
    module's ``forward`` is ``loss_of`` itself."""
    inner = ddp.module
    own = vars(inner).get("forward")  # an instance-level forward to put back, if the module had one
    inner.forward = lambda: loss_of(inner)
    try:
        return ddp()
    finally:
        if own is None:
            del inner.forward
        else:
            inner.forward = own


class ABTrainer(AnswerLossTrainer):
    """Trainer whose evaluation also reports dev balanced accuracy from the A/B scorer.

    Evaluation never sees training augmentation: ``eval_collator`` (the plain ABCollator) stands
    in for the training collator while it runs, and the balanced accuracy is computed on the
    dataset being evaluated (``eval_dataset`` if given, else the Trainer's own).
    """

    def __init__(self, *args: Any, eval_collator: ABCollator, prompt_cfg: Mapping, score_batch: int,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.eval_collator = eval_collator
        self.prompt_cfg = prompt_cfg
        self.score_batch = score_batch

    def evaluate(self, eval_dataset: ClipDataset | None = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        train_collator, self.data_collator = self.data_collator, self.eval_collator
        try:
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        finally:
            self.data_collator = train_collator
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        logits = score_ab_logits(self.model, self.processing_class, dataset.audio, self.prompt_cfg,
                                 self.score_batch)
        pred = (logits[:, 0] > logits[:, 1]).astype(int)
        extra = {f"{metric_key_prefix}_balanced_accuracy": balanced_accuracy(dataset.labels, pred)}
        metrics.update(extra)
        self.log(extra)
        return metrics


def best_evaluation(log_history: list[dict], best_checkpoint: str | None) -> dict[str, float]:
    """Dev metrics logged at the best checkpoint's step, so the best need not be scored again.

    The Trainer logs dev loss and :class:`ABTrainer`'s balanced accuracy in two entries of one
    step; both are merged. Without a best checkpoint (no evaluation ran) this is an error.
    """
    if not best_checkpoint:
        raise RuntimeError("training ran no dev evaluation: no best checkpoint to report")
    step = int(Path(best_checkpoint).name.rsplit("-", 1)[1])
    merged: dict[str, float] = {}
    for row in log_history:
        if row.get("step") == step:
            merged.update({k: v for k, v in row.items() if k.startswith("eval_") and k not in merged})
    return merged


def run_key(params: Mapping[str, Any], data_files: list[Path]) -> str:
    """Identity of a training run: params plus split contents. Checkpoints resume only on a match."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for f in data_files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _complete(checkpoint: Path) -> bool:
    """A checkpoint the Trainer finished: it writes trainer_state.json last (weights, optimiser first)."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def prepare_checkpoint_dir(ckpt_dir: Path, key: str) -> Path | None:
    """The checkpoint to resume from, or None after starting ``ckpt_dir`` afresh.

    Checkpoints are reused only when ``RUN_KEY`` matches this run. A checkpoint cut off while
    being written (the process killed mid-save) is deleted, so the run resumes from the last
    complete one instead of failing on it.
    """
    stamp = ckpt_dir / "RUN_KEY"
    if stamp.exists() and stamp.read_text() == key:
        checkpoints = sorted(ckpt_dir.glob("checkpoint-*"), key=lambda c: int(c.name.rsplit("-", 1)[1]))
        complete = [c for c in checkpoints if _complete(c)]
        for partial in set(checkpoints) - set(complete):
            shutil.rmtree(partial)
        if complete:
            return complete[-1]
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True)
    stamp.write_text(key)
    return None


def training_arguments(cfg: Mapping[str, Any], ckpt_dir: Path, seed: int, use_cpu: bool,
                       bf16: bool, pin_memory: bool = True, processes: int = 1) -> TrainingArguments:
    """TrainingArguments from ``train.*`` params; the best checkpoint is chosen on dev.

    ``pin_memory`` False when the collator already returns batches on the GPU. With ``processes``
    > 1 (under torchrun) each takes ``batch_size / processes`` clips a micro-step, so a step still
    sees ``batch_size x grad_accum`` clips: accelerate gives process k the micro-batches k, k + N...
    of the one seeded order, so a step's clips are those of the one-process step. DDP is told
    that every trainable parameter is used (the Trainer would pass ``find_unused_parameters=True``
    for a PeftModel, which is slower and clashes with checkpointing; ours is non-reentrant,
    qvad.model.loading), and CPU processes talk through gloo."""
    distributed = {} if processes == 1 else {"ddp_find_unused_parameters": False,
                                              "ddp_backend": "gloo" if use_cpu else "nccl"}
    batch = per_process_batch(cfg["batch_size"], processes)
    return TrainingArguments(
        **distributed,
        output_dir=str(ckpt_dir),
        num_train_epochs=cfg["epochs"],
        learning_rate=cfg["learning_rate"],
        warmup_steps=cfg["warmup_steps"],
        lr_scheduler_type=cfg["scheduler"],
        weight_decay=cfg["weight_decay"],
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=batch,
        gradient_accumulation_steps=cfg["grad_accum"],
        # Dev evaluation (a loss pass and a scorer pass over dev) and a checkpoint every
        # ``eval_steps`` optimiser steps, or once per epoch when it is null.
        eval_strategy="epoch" if cfg["eval_steps"] is None else "steps",
        eval_steps=cfg["eval_steps"],
        save_strategy="epoch" if cfg["eval_steps"] is None else "steps",
        save_steps=cfg["eval_steps"],
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model=cfg["select_on"],
        greater_is_better=cfg["select_on"] == "eval_balanced_accuracy",
        logging_steps=cfg["logging_steps"],
        seed=seed,
        data_seed=seed,
        bf16=bf16,
        use_cpu=use_cpu,
        report_to=[],
        remove_unused_columns=False,
        prediction_loss_only=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=pin_memory,
        disable_tqdm=False,
    )
