"""How far one clip's P(speech) moves between two batchings, with the answer logits in float32 or bfloat16.

    python -m benchmarks.gpu_pipeline.batching --data .gpu_data [--device cuda] [--depth 4+4]

Scores the subset's test clips with the random-weight Qwen2-Audio checkpoint
(:mod:`benchmarks.gpu_pipeline.checkpoint`) in bf16 at evaluate's batch size (32) and at
``qvad predict``'s (64), as the GPU check compares them, and prints the largest |dP| between the
two. The scorer forms the two answer logits in float32; rounding those logits to bfloat16 shows
what the scorer gave before it did (a bfloat16 product rounds its float32 sum the same way).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy.special import expit

from benchmarks.gpu_pipeline.checkpoint import print_and_save, scoring_benchmark_args
from qvad.audio.io import read_wav
from qvad.model.loading import load_model_and_processor
from qvad.model.scoring import score_ab_logits

BATCHES = (32, 64)


def p_speech(logits: np.ndarray, bf16: bool) -> np.ndarray:
    if bf16:
        logits = torch.from_numpy(logits).bfloat16().float().numpy()
    return expit(logits[:, 0].astype(np.float64) - logits[:, 1])


def main(argv: list[str] | None = None) -> None:
    args, ckpt = scoring_benchmark_args(__doc__.splitlines()[0], argv)
    dtype = "bfloat16" if args.device == "cuda" else "float32"
    model, processor = load_model_and_processor(
        {"preset": "qwen2-audio-7b-instruct", "path": str(ckpt), "quantization": "bf16" if args.device == "cuda"
         else "none", "dtype": dtype, "truncate_encoder": True}, args.device, for_training=False)
    test = pd.read_csv(args.data / "data/splits/test.csv", keep_default_na=False)
    clips = [read_wav(args.data / path) for path in test["path"]]
    logits = {b: score_ab_logits(model, processor, clips, None, b) for b in BATCHES}
    result = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", "dtype": dtype,
              "depth": args.depth, "clips": len(clips), "batches": list(BATCHES),
              "max_abs_logit": float(np.abs(logits[BATCHES[0]]).max())}
    for name, bf16 in (("float32_logits", False), ("bfloat16_logits", True)):
        diff = np.abs(p_speech(logits[BATCHES[0]], bf16) - p_speech(logits[BATCHES[1]], bf16))
        result[name] = {"max_abs_dp": float(diff.max()), "mean_abs_dp": float(diff.mean())}
    print_and_save(result, args.out)


if __name__ == "__main__":
    main()
