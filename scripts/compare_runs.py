"""Paired test-set comparison of two runs' models (e.g. an experiment against its baseline commit).

    python scripts/compare_runs.py BASELINE_REV OTHER_REV [--out FILE]

Reads each run's ``data/eval/predictions.csv`` through ``dvc.api`` (the runs must share their test
clips) and reports the model's balanced accuracy in both, and OTHER minus BASELINE with one group
bootstrap that resamples both runs together (qvad.analysis.paired), next to the clip McNemar.
"""

from __future__ import annotations

import argparse
import json
import sys
from io import StringIO
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qvad.analysis import metrics, paired  # noqa: E402


def predictions(rev: str) -> pd.DataFrame:
    """The evaluate stage's per-clip predictions of one git revision or experiment."""
    import dvc.api

    return pd.read_csv(StringIO(dvc.api.read("data/eval/predictions.csv", repo=str(ROOT), rev=rev)))


def compare(base: pd.DataFrame, other: pd.DataFrame, n_boot: int, seed: int) -> dict:
    """Both runs' model BA and the paired difference OTHER - BASE; ValueError if the clips differ."""
    if list(base["clip_id"]) != list(other["clip_id"]):
        raise ValueError("the two runs scored different test clips: a paired comparison needs the same ones")
    y = (base["label"] == "speech").astype(int).to_numpy()
    pa, pb = (other["p_speech_calibrated"] > 0.5).astype(int).to_numpy(), (base["p_speech_calibrated"] > 0.5).astype(int).to_numpy()
    diff = paired.paired_ba_difference(y, pa, pb, base["group"].to_numpy(), n_boot=n_boot, seed=seed)
    return {"baseline_ba": round(metrics.balanced_accuracy(y, pb), 4), "other_ba": round(metrics.balanced_accuracy(y, pa), 4),
            "other_minus_baseline": {**diff, "mcnemar_clips": paired.mcnemar_exact(pa == y, pb == y)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("baseline")
    ap.add_argument("other")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    result = {"baseline": args.baseline, "other": args.other,
              **compare(predictions(args.baseline), predictions(args.other), args.n_boot, 0)}
    print(json.dumps(result, indent=2, default=float))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
