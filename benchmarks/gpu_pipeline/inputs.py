"""Whether ``qvad predict`` feeds the model evaluate's samples, and what a sub-LSB difference does in bfloat16.

    python -m benchmarks.gpu_pipeline.inputs --data .gpu_data [--device cuda] [--depth 4+4] [--out F.json]

Scores the subset's test clips (stored as 16-bit FLAC by ``scripts/gather_gpu_carry.sh``) with the
random-weight Qwen2-Audio checkpoint (:mod:`benchmarks.gpu_pipeline.checkpoint`), at
``evaluate.batch_size`` and in the same order, three ways:

- ``evaluate``: the samples as the evaluate stage reads them (``qvad.audio.io.read_wav``);
- ``predict``: as ``qvad predict`` prepares them (decoded, then normalised by
  :func:`qvad.data.level.normalize`, which leaves a clip already at its level unchanged);
- ``renormalised``: decoded with the normaliser's gain applied even when it is within
  :data:`qvad.data.level.UNITY` of 1, as predict did before normalisation was idempotent.

and prints, per quantization, how many clips' samples differ from evaluate's and the largest
|difference| of the answer-logit margin (logit A - logit B) against evaluate's. Same batches, same
shapes: any difference comes from the samples alone.
"""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.gpu_pipeline.checkpoint import print_and_save, scoring_benchmark_args
from qvad.audio.decode import decode_file
from qvad.audio.io import read_wav
from qvad.common.params import load_params
from qvad.data.level import gain_for, normalize_as
from qvad.model.loading import load_model_and_processor
from qvad.model.scoring import score_ab_logits

REPO = Path(__file__).resolve().parents[2]


def inputs(paths: list[Path], norm: dict) -> dict[str, list[np.ndarray]]:
    """The three versions of each clip (see the module docstring)."""
    decoded = [decode_file(p, None).audio for p in paths]
    levels = {k: float(norm[k]) for k in ("peak_target", "headroom_db", "rms_dbfs")}
    return {"evaluate": [read_wav(p) for p in paths],
            "predict": [normalize_as(x, norm)[0] for x in decoded],
            "renormalised": [np.clip(x * gain_for(x, norm["method"], **levels), -1.0, 1.0).astype(np.float32)
                             for x in decoded]}


def main(argv: list[str] | None = None) -> None:
    args, ckpt = scoring_benchmark_args(__doc__.splitlines()[0], argv)
    params = load_params(REPO / "params.yaml")
    test = pd.read_csv(args.data / "data/splits/test.csv", keep_default_na=False)
    clips = inputs([args.data / p for p in test["path"]], params["normalize"])
    batch = int(params["evaluate"]["batch_size"])
    result = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", "depth": args.depth,
              "clips": len(test), "batch_size": batch,
              "clips_with_other_samples": {k: int(sum(not np.array_equal(a, b) for a, b in
                                                      zip(clips["evaluate"], clips[k])))
                                           for k in ("predict", "renormalised")}}
    for quantization in (("nf4", "bf16") if args.device == "cuda" else ("none",)):
        model, processor = load_model_and_processor(
            {"preset": "qwen2-audio-7b-instruct", "path": str(ckpt), "quantization": quantization,
             "dtype": "bfloat16" if args.device == "cuda" else "float32", "truncate_encoder": True},
            args.device, for_training=False)
        logits = {k: score_ab_logits(model, processor, v, None, batch) for k, v in clips.items()}
        margin = {k: v[:, 0] - v[:, 1] for k, v in logits.items()}
        result[quantization] = {"margin_std": float(np.std(margin["evaluate"]))} | {
            f"max_abs_margin_diff_{k}": float(np.abs(margin[k] - margin["evaluate"]).max())
            for k in ("predict", "renormalised")}
        del model
        gc.collect()
        if args.device == "cuda":
            torch.cuda.empty_cache()
    print_and_save(result, args.out)


if __name__ == "__main__":
    main()
