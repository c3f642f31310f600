"""What Qwen2-Audio's pool-then-norm order costs the whisper-tiny encoder's features, on dev only.

Qwen2-Audio's encoder average-pools (stride 2) and then applies its final LayerNorm; Whisper,
whose weights the whisper-tiny preset carries, normalises every frame and was trained that way.
This probe takes the frozen encoder's last hidden states of each train and dev clip (the
pipeline's own splits and prompt batches, the preset's own weights) and builds both orders from
the same states: ``LN(pool(h))`` (what the model's projector sees) and ``pool(LN(h))``. Each
becomes a clip feature by mean and max over its audio tokens, and a logistic regression trained
on train is scored on dev (C chosen on dev for each order alike). Test clips are never read.

    PYTHONPATH=. .venv/bin/python benchmarks/norm_order_probe.py [--out benchmarks/results/norm_order_probe.json]

Needs ``dvc repro group_split`` (data/splits) and models/base (the train stage builds it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from qvad.common.cpu_numerics import pin_cpu_numerics
from qvad.common.params import get, load_params
from qvad.model.collate import ABCollator
from qvad.model.dataset import ClipDataset
from qvad.model.store import load_trained, read_prompt

C_GRID = (0.01, 0.1, 1.0, 10.0)


def token_features(model: torch.nn.Module, processor, audios: list[np.ndarray], prompt: dict,
                   batch: int = 32) -> dict[str, np.ndarray]:
    """Mean+max over each clip's audio tokens, for both orders of pooling and the final norm."""
    tower = model.model.audio_tower
    captured: list[torch.Tensor] = []
    hook = tower.avg_pooler.register_forward_pre_hook(lambda _m, args: captured.append(args[0].transpose(1, 2)))
    collator = ABCollator(processor, prompt, "cpu")
    out: dict[str, list[np.ndarray]] = {"pool_then_norm": [], "norm_then_pool": []}
    try:
        with torch.inference_mode():
            for start in range(0, len(audios), batch):
                inputs = collator.host_prompt_batch(audios[start : start + batch])
                captured.clear()
                model(**inputs)  # the model's own encoder call: truncation, masks, as in training
                hidden = captured[0]  # [rows, positions, d] before pooling
                _, lengths = tower._get_feat_extract_output_lengths(inputs["feature_attention_mask"].sum(-1))
                pooled_first = tower.layer_norm(tower.avg_pooler(hidden.transpose(1, 2)).transpose(1, 2))
                normed_first = tower.avg_pooler(tower.layer_norm(hidden).transpose(1, 2)).transpose(1, 2)
                for name, states in (("pool_then_norm", pooled_first), ("norm_then_pool", normed_first)):
                    for row, n in zip(states, lengths.tolist()):
                        tokens = row[:n].float()
                        out[name].append(torch.cat([tokens.mean(0), tokens.amax(0)]).numpy())
    finally:
        hook.remove()
    return {name: np.stack(rows) for name, rows in out.items()}


def probe(train_x: np.ndarray, train_y: np.ndarray, dev_x: np.ndarray, dev_y: np.ndarray, seed: int) -> dict:
    """Dev balanced accuracy of a logistic regression per C; the best C's figure."""
    by_c = {}
    for c in C_GRID:
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, random_state=seed))
        clf.fit(train_x, train_y)
        by_c[str(c)] = round(float(balanced_accuracy_score(dev_y, clf.predict(dev_x))), 4)
    best = max(by_c, key=by_c.get)
    return {"dev_balanced_accuracy_by_C": by_c, "best_C": float(best), "dev_balanced_accuracy": by_c[best]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/norm_order_probe.json"))
    args = ap.parse_args()
    params = load_params()
    pin_cpu_numerics(params["cpu_threads"])
    model, processor = load_trained(get(params, "model"), adapter=None)
    prompt = read_prompt()
    train, dev = ClipDataset("data/splits/train.csv"), ClipDataset("data/splits/dev.csv")
    feats = {name: token_features(model, processor, ds.audio, prompt) for name, ds in (("train", train), ("dev", dev))}
    report = {"command": "PYTHONPATH=. .venv/bin/python benchmarks/norm_order_probe.py",
              "preset": get(params, "model.preset"), "train_clips": len(train), "dev_clips": len(dev),
              "feature": "mean and max over the clip's audio tokens (768 values)", "orders": {}}
    for order in ("pool_then_norm", "norm_then_pool"):
        report["orders"][order] = probe(feats["train"][order], np.asarray(train.labels),
                                        feats["dev"][order], np.asarray(dev.labels), int(params["seed"]))
    a, b = (feats["dev"][o] for o in ("pool_then_norm", "norm_then_pool"))
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    report["dev_feature_cosine"] = {"mean": round(float(cos.mean()), 5), "min": round(float(cos.min()), 5)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
