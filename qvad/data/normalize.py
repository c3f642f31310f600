"""The normalize stage: one gain per clip (peak by default), written to data/normalized/."""

from __future__ import annotations

import shutil
from pathlib import Path

from tqdm import tqdm

from qvad.common.atomic import write_csv
from qvad.audio.io import read_wav, write_wav
from qvad.data.manifest import read_manifest
from qvad.data.level import METHODS, normalize_as
from qvad.common.params import choice, get, require

OUT = Path("data/normalized")


def normalize_clips(params: dict) -> None:
    """Run the normalize stage with ``params`` (params.yaml as a dict)."""
    method = choice(params, "normalize.method", METHODS)
    cfg = get(params, "normalize")
    require(0 < cfg["peak_target"] <= 1, "normalize.peak_target", "must be within (0, 1]")
    require(cfg["headroom_db"] >= 0, "normalize.headroom_db", "must be >= 0")
    manifest = read_manifest("data/mixed/manifest.csv", ["clip_id", "path"])
    if OUT.exists():
        shutil.rmtree(OUT)
    paths, gains = [], []
    for row in tqdm(manifest.itertuples(), total=len(manifest), desc="normalize", mininterval=5):
        y, gain_db = normalize_as(read_wav(row.path), cfg)
        path = OUT / "audio" / f"{row.clip_id}.wav"
        write_wav(path, y)
        paths.append(path.as_posix())
        gains.append(round(gain_db, 4))
    write_csv(OUT / "manifest.csv", manifest.assign(path=paths, gain_db=gains, normalize=method))

