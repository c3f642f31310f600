"""How far a merged export scores from the model it came from, on prepared clips of a split.

    python scripts/compare_export.py models exported --split data/splits/test.csv -n 100 --plain 20

Prints JSON: the largest |difference| of the A/B logits and of calibrated P(speech) between
``Detector.from_dir(MODELS_DIR)`` (base + adapter, peft) and ``Detector.from_dir(EXPORT_DIR)``
(merged), over the first ``n`` clips of the split (already in their container and normalised,
as evaluate scores them); and, over the first ``--plain`` of them, between the merged Detector
and plain transformers (``from_pretrained`` + ``AutoProcessor`` + the card's prompt, one clip at
a time: what a user without this package runs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd


def plain_logits(export_dir: Path, clips: list[np.ndarray], prompt: dict) -> np.ndarray:
    """A/B logits from transformers alone, as the model card's example computes them."""
    import torch
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    model = Qwen2AudioForConditionalGeneration.from_pretrained(export_dir).eval()
    processor = AutoProcessor.from_pretrained(export_dir)
    parts = [{"type": "audio", "audio_url": "clip"}, {"type": "text", "text": prompt["user"]}]
    if prompt.get("audio_position") == "after_question":
        parts.reverse()
    conversation = [{"role": "system", "content": prompt["system"]}, {"role": "user", "content": parts}]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    ids = processor.tokenizer.convert_tokens_to_ids(["A", "B"])
    out = []
    with torch.no_grad():
        for clip in clips:
            inputs = processor(text=text, audio=clip, sampling_rate=16000, return_tensors="pt")
            out.append(model(**inputs).logits[0, -1, ids].float().numpy())
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models_dir")
    ap.add_argument("export_dir")
    ap.add_argument("--split", default="data/splits/test.csv")
    ap.add_argument("--root", default=".", help="folder the split's paths are relative to")
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--plain", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from qvad.audio.io import load_audio
    from qvad.common.cpu_numerics import pin_cpu_numerics
    from qvad.detector import Detector

    pin_cpu_numerics(args.threads)
    rows = pd.read_csv(args.split).head(args.n)
    clips = [load_audio(Path(args.root) / p)[0] for p in rows["path"]]
    unmerged = Detector.from_dir(args.models_dir, device="cpu")
    merged = Detector.from_dir(args.export_dir, device="cpu")
    lu, lm = unmerged.logits(clips), merged.logits(clips)
    pu, pm = unmerged.calibrate(lu), merged.calibrate(lm)
    report = {"clips": len(clips), "merged_vs_unmerged": {
        "max_abs_logit_diff": float(np.abs(lu - lm).max()), "max_abs_p_diff": float(np.abs(pu - pm).max()),
        "decisions_differ": int(((pu >= unmerged.config.threshold) != (pm >= merged.config.threshold)).sum())}}
    if args.plain:
        lp = plain_logits(Path(args.export_dir), clips[: args.plain], merged.config.prompt)
        report["plain_transformers_vs_detector"] = {
            "clips": len(lp), "max_abs_logit_diff": float(np.abs(lp - lm[: len(lp)]).max()),
            "max_abs_p_diff": float(np.abs(merged.calibrate(lp) - pm[: len(lp)]).max())}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
