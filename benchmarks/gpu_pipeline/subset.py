"""The data the GPU pipeline check trains and evaluates on: a small, stratified subset of a finished CPU run.

Run here, on the machine that ran the data stages (``dvc repro audit``), by
``scripts/gather_gpu_carry.sh``; the GPU machine then needs neither the raw corpus (1.8 GB) nor
the normalised clips (300 MB). What it writes under ``OUT``, laid out as the stages read it:

- ``data/splits/{train,dev,test}.csv`` with ``per_cell`` clips of every (label, duration, SNR)
  cell of each split (seeded), their audio as 16-bit FLAC under ``data/normalized/audio`` (about
  36 KB a 2 s clip against 125 KB as float WAV; the stages read any format soundfile reads);
- for the psychometric stage: ``data/mixed/groups.csv`` as it is, and ``data/hygiene/manifest.csv``
  holding only the test-split segments that stage would take as bases with
  ``psychometric.bases_per_class = psy_bases``, each cut to exactly the 1 s the stage cuts from it
  (float WAV under ``data/raw/audio``, so the voicing check sees the same samples). The stage run on
  this subset with that ``bases_per_class`` takes the same base cuts as on the full corpus (their
  order, and so the seeded noise of each variant, differs).

``--splits test --test-per-cell 1000`` writes the whole test split and the bases alone: a second
part for a carry too small for everything at once (``check.py --data FIRST --data SECOND``).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from qvad import SAMPLE_RATE
from qvad.analysis.variants import build_variants, centre_cuts_voiced, held_out_segments, pick_bases
from qvad.audio.io import read_wav
from qvad.common.params import get, load_params
from qvad.data.render import cut_source

CELL = ["label", "duration_ms", "snr_db"]


def split_subset(split_csv: Path, per_cell: int, seed: int) -> pd.DataFrame:
    """``per_cell`` clips of each (label, duration, SNR) cell (all of a smaller cell), in the split's order."""
    df = pd.read_csv(split_csv, keep_default_na=False)
    missing = [c for c in CELL + ["path"] if c not in df.columns]
    if missing:
        raise ValueError(f"{split_csv}: missing columns {missing}")
    picked = df.groupby(CELL, group_keys=False).apply(
        lambda cell: cell.sample(n=min(per_cell, len(cell)), random_state=seed))
    return df.loc[sorted(picked.index)]


def write_split(df: pd.DataFrame, src_root: Path, out: Path, name: str) -> int:
    """Write the clips of ``df`` as 16-bit FLAC and the split CSV pointing at them; returns bytes written."""
    paths, size = [], 0
    for rel in df["path"]:
        target = Path(rel).with_suffix(".flac")
        (out / target).parent.mkdir(parents=True, exist_ok=True)
        sf.write(out / target, read_wav(src_root / rel), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        size += (out / target).stat().st_size
        paths.append(target.as_posix())
    (out / "data/splits").mkdir(parents=True, exist_ok=True)
    df.assign(path=paths).to_csv(out / "data/splits" / f"{name}.csv", index=False)
    return size


def psychometric_bases(src_root: Path, params: dict, per_class: int) -> pd.DataFrame:
    """The hygiene rows the psychometric stage takes as bases with ``bases_per_class = per_class``.

    Runs the stage's own selection (:func:`pick_bases`, :func:`build_variants`) on the full manifest.
    """
    cfg = {**get(params, "psychometric"), "bases_per_class": per_class}
    segments = held_out_segments(pd.read_csv(src_root / "data/hygiene/manifest.csv", keep_default_na=False),
                                 pd.read_csv(src_root / "data/mixed/groups.csv"))
    segments = segments.assign(path=[str(src_root / p) for p in segments["path"]])
    candidates = pick_bases(segments, None, cfg["base_ms"] / 1000, int(params["seed"]))
    bases, _, _ = build_variants(candidates, per_class, cfg, get(params, "mix"), get(params, "normalize"),
                                 float(get(params, "hygiene.min_speech_frac")), int(params["seed"]))
    return bases


def write_bases(bases: pd.DataFrame, params: dict, out: Path) -> int:
    """Each base as the 1 s cut the stage takes from it, with a manifest row spanning exactly that cut."""
    cfg, seed = get(params, "psychometric"), int(params["seed"])
    min_voiced = float(get(params, "hygiene.min_speech_frac"))
    n = int(round(cfg["base_ms"] * SAMPLE_RATE / 1000))
    ok = centre_cuts_voiced(cfg, min_voiced)
    rows, size = [], 0
    for b, base in enumerate(bases.to_dict("records")):
        # build_variants draws base b's cut from default_rng([seed, b]): the same cut again.
        cut, _, _ = cut_source({**base, "source_path": base["path"]}, n, np.random.default_rng([seed, b]),
                               min_voiced, ok if base["label"] == "speech" else None)
        target = Path("data/raw/audio") / f"psy_base_{b:03d}.wav"
        (out / target).parent.mkdir(parents=True, exist_ok=True)
        sf.write(out / target, cut, SAMPLE_RATE, subtype="FLOAT")
        size += (out / target).stat().st_size
        rows.append({**base, "path": target.as_posix(), "seg_start_s": 0.0, "seg_end_s": n / SAMPLE_RATE})
    (out / "data/hygiene").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=bases.columns).to_csv(out / "data/hygiene/manifest.csv", index=False)
    return size


def build_subset(src_root: Path, out: Path, per_cell: dict[str, int], psy_bases: int, source: str = ".") -> dict:
    """Write the subset of the splits in ``per_cell`` under ``out`` (replacing it); returns what was written.

    ``source`` is how the summary names ``src_root`` (as the user gave it: no machine's paths)."""
    params = load_params(src_root / "params.yaml")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    summary: dict = {"source": source, "per_cell": per_cell, "psychometric_bases_per_class": psy_bases}
    for name, k in per_cell.items():
        df = split_subset(src_root / "data/splits" / f"{name}.csv", k, int(params["seed"]))
        summary[name] = {"clips": len(df), "labels": df["label"].value_counts().to_dict(),
                         "bytes": write_split(df, src_root, out, name)}
    (out / "data/mixed").mkdir(parents=True)
    shutil.copy(src_root / "data/mixed/groups.csv", out / "data/mixed/groups.csv")
    bases = psychometric_bases(src_root, params, psy_bases)
    summary["psychometric"] = {"bases": bases["label"].value_counts().to_dict(),
                               "bytes": write_bases(bases, params, out)}
    (out / "subset.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="src", type=Path, default=Path("."), help="checkout whose data/ to read")
    ap.add_argument("--out", type=Path, default=Path(".gpu_data"))
    ap.add_argument("--train-per-cell", type=int, default=9)
    ap.add_argument("--dev-per-cell", type=int, default=2)
    ap.add_argument("--test-per-cell", type=int, default=2)
    ap.add_argument("--psy-bases", type=int, default=8, help="psychometric bases per class")
    ap.add_argument("--splits", default="train,dev,test",
                    help="splits to write (e.g. test: a second part that check.py --data lays over the first)")
    args = ap.parse_args()
    sizes = {"train": args.train_per_cell, "dev": args.dev_per_cell, "test": args.test_per_cell}
    names = args.splits.split(",")
    if not names or any(n not in sizes for n in names):
        ap.error(f"--splits: choose among {list(sizes)}, got {args.splits!r}")
    per_cell = {n: sizes[n] for n in names}
    print(json.dumps(build_subset(args.src.resolve(), args.out, per_cell, args.psy_bases, str(args.src)), indent=2))


if __name__ == "__main__":
    main()
