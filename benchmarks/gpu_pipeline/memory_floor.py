"""Peak GPU memory and clips/s of 7B QLoRA training and scoring across the settings that trade one for the other.

    python -m benchmarks.gpu_pipeline.memory_floor --out OUT [--depth 32+32] [--budget-s S]

Loads the random-weight Qwen2-Audio checkpoint (benchmarks.gpu_pipeline.checkpoint) through
``qvad.model.loading.load_model_and_processor`` in NF4 as the train stage does, with gradient
checkpointing on and then off, adds LoRA from params.yaml (``qvad.model.lora.apply_lora``), and
times the train stage's step (the Trainer with the answer-only loss and the shared prefix,
benchmarks.gpu.training.time_training) on 2 s containers at rising batch sizes; then the scorer
(``qvad.model.scoring.score_ab_logits``) in NF4 without the adapter. Each row: peak allocated and
reserved GiB, clips/s. Also the memory held by the weights right after loading, the floor below
which no batch size goes. Writes ``OUT/memory_floor.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from benchmarks.gpu.common import allocated_gib, cleanup, container_clips, is_oom
from benchmarks.gpu.inference import time_scorer
from benchmarks.gpu.training import time_training
from benchmarks.gpu_pipeline.check import REPO
from benchmarks.gpu_pipeline.checkpoint import build_qwen2_audio
from qvad.model.encoder_truncation import truncate_as_configured
from qvad.model.loading import load_model_and_processor
from qvad.model.lora import apply_lora

PRESET = "qwen2-audio-7b-instruct"
TRAIN_BATCHES = {True: (4, 8, 16, 32, 64), False: (8, 16, 32)}
SCORE_BATCHES = (16, 64, 256)
STOP_GIB = 30.0
"""A sweep stops once a row peaks above this: the 24 GB card's row is found below it."""


def sweep(rows: list, label: str, batches: tuple[int, ...], measure, deadline: float) -> None:
    """Ascending batch sizes until an OOM, a peak above :data:`STOP_GIB` or the deadline."""
    for batch in batches:
        if time.time() > deadline:
            rows.append({"config": label, "batch": batch, "skipped": "time budget"})
            break
        try:
            row = {"config": label, **measure(batch)}
        except Exception as exc:  # noqa: BLE001 - an OOM is a result
            row = {"config": label, "batch": batch, "error": "OOM" if is_oom(exc) else f"{type(exc).__name__}: {exc}"}
            cleanup()
        rows.append(row)
        print(json.dumps(row), flush=True)
        if "error" in row or row.get("peak_reserved_gib", 0) > STOP_GIB:
            break


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--depth", default="32+32")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/qvad_gpu_check"))
    ap.add_argument("--budget-s", type=float, default=480.0)
    args = ap.parse_args()
    deadline = time.time() + args.budget_s
    audio_layers, text_layers = (int(x) for x in args.depth.split("+"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    ckpt = build_qwen2_audio(args.workdir / "checkpoints" / f"qwen2_audio_7b_{audio_layers}x{text_layers}", "7b",
                             audio_layers, text_layers, "cuda")
    report: dict = {"device": torch.cuda.get_device_name(0), "depth": args.depth, "lora": params["lora"],
                    "clips": "2 s containers with a 0.2-1 s clip (the mix stage's layout)", "rows": [], "weights": {}}
    out = args.out / "memory_floor.json"
    args.out.mkdir(parents=True, exist_ok=True)
    prompt_cfg = params["prompt"]
    for checkpointing in (True, False):
        if time.time() > deadline:
            report["rows"].append({"config": f"train nf4 checkpointing={checkpointing}", "skipped": "time budget"})
            continue
        cfg = {**params["model"], "preset": PRESET, "path": str(ckpt), "quantization": "nf4", "dtype": "bfloat16",
               "gradient_checkpointing": checkpointing}
        torch.cuda.reset_peak_memory_stats()
        model, processor = load_model_and_processor(cfg, "cuda", for_training=True)
        report["weights"]["nf4_loaded_gib"] = allocated_gib()
        model, counts = apply_lora(model, params["lora"], PRESET)
        truncate_as_configured(model, cfg)
        report["weights"]["with_lora_gib"] = allocated_gib()
        report["trainable_parameters"] = {k: int(v) for k, v in counts.items()}
        label = f"train nf4 {'checkpointing' if checkpointing else 'no checkpointing'}"
        sweep(report["rows"], label, TRAIN_BATCHES[checkpointing],
              lambda b: time_training(model, processor, container_clips, b, prompt_cfg, args.workdir, 6, 2),
              deadline)
        out.write_text(json.dumps(report, indent=2) + "\n")
        del model
        cleanup()
    if time.time() > deadline:
        report["rows"].append({"config": "score nf4", "skipped": "time budget"})
        out.write_text(json.dumps(report, indent=2) + "\n")
        return
    cfg = {**params["model"], "preset": PRESET, "path": str(ckpt), "quantization": "nf4", "dtype": "bfloat16"}
    model, processor = load_model_and_processor(cfg, "cuda", for_training=False)
    report["weights"]["nf4_scoring_gib"] = allocated_gib()
    clips = container_clips(4 * max(SCORE_BATCHES), 5)
    sweep(report["rows"], "score nf4", SCORE_BATCHES,
          lambda b: time_scorer(model, processor, clips[: max(4 * b, 128)], b, prompt_cfg, "cuda"), deadline)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["weights"]))


if __name__ == "__main__":
    main()
