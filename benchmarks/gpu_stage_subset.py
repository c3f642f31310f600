"""Build the carry folder for ``gpu_stage_smoke.sh``: a balanced subset of the train and dev splits.

The full normalised data (~300 MB of float WAVs) is over the device tool's 64 MiB carry limit,
so the smoke trains on a seeded, class-balanced subset written as 16-bit PCM (the pipeline's
reader accepts any subtype). Needs ``dvc repro group_split`` here first.

    PYTHONPATH=. .venv/bin/python benchmarks/gpu_stage_subset.py [--out .gpu_smoke] [--train 360 --dev 120]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pandas as pd
import soundfile as sf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(".gpu_smoke"))
    ap.add_argument("--train", type=int, default=360)
    ap.add_argument("--dev", type=int, default=120)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    data = args.out / "data"
    if data.exists():
        shutil.rmtree(data)
    (data / "splits").mkdir(parents=True)
    for split, n in (("train", args.train), ("dev", args.dev)):
        df = pd.read_csv(f"data/splits/{split}.csv", keep_default_na=False)
        sub = pd.concat([df[df["label"] == lab].sample(n=n // 2, random_state=args.seed)
                         for lab in ("speech", "nonspeech")]).sort_values("clip_id")
        for path in sub["path"]:
            audio, sr = sf.read(path, dtype="float32")
            (args.out / path).parent.mkdir(parents=True, exist_ok=True)
            sf.write(args.out / path, audio, sr, subtype="PCM_16")
        sub.to_csv(data / "splits" / f"{split}.csv", index=False)
        print(f"{split}: {len(sub)} clips {sub['label'].value_counts().to_dict()}")


if __name__ == "__main__":
    main()
