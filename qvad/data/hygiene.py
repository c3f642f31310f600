"""The vad_hygiene stage: keep densely voiced speech regions, reject non-speech files with voice."""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import pandas as pd
from tqdm import tqdm

from qvad.common.atomic import write_csv, write_json
from qvad.audio.io import read_wav
from qvad.data.sources.builtin import is_music
from qvad.common.cpu_numerics import pin_cpu_numerics
from qvad.data.voiced_regions import speech_regions
from qvad.data.manifest import read_manifest
from qvad.common.params import choice, get, require
from qvad.audio.vad import voiced_frames


def _check(row: dict, cfg: dict) -> dict:
    """Hygiene decision for one raw file: kept segments, or a rejection reason."""
    x = read_wav(row["path"])
    vad = cfg["speech_vad"] if row["label"] == "speech" else cfg["nonspeech_vad"]
    voiced, frame_s = voiced_frames(x, vad, mode=cfg["webrtc_mode"], frame_ms=cfg["frame_ms"],
                                    threshold=cfg["silero_threshold"])
    frac = float(voiced.mean()) if voiced.size else 0.0
    if row["label"] == "nonspeech":
        if frac > cfg["max_speech_frac"]:
            return {"reject": f"voiced fraction {frac:.3f} > max_speech_frac", "frac": frac}
        return {"segments": [(0.0, row["duration_s"], frac)], "frac": frac}
    min_frames = int(round(cfg["min_region_ms"] / 1000 / frame_s))
    regions = speech_regions(voiced, cfg["min_speech_frac"], max(min_frames, 1))
    if not regions:
        return {"reject": "no region with enough voiced frames", "frac": frac}
    return {"segments": [(s * frame_s, e * frame_s, f) for s, e, f in regions], "frac": frac}


def vad_hygiene(params: dict) -> None:
    """Run the vad_hygiene stage with ``params`` (params.yaml as a dict)."""
    logging.basicConfig(level=logging.INFO)
    pin_cpu_numerics(1)  # portable kernels; Silero runs one thread per worker anyway (qvad.audio.vad)
    cfg = dict(get(params, "hygiene"))
    for key in ("speech_vad", "nonspeech_vad"):
        choice(params, f"hygiene.{key}", ("webrtc", "silero"))
    for key in ("min_speech_frac", "max_speech_frac"):
        require(0.0 <= cfg[key] <= 1.0, f"hygiene.{key}", "must be within [0, 1]")
    raw = read_manifest("data/raw/manifest.csv")
    rows = raw.to_dict("records")
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = list(tqdm(pool.map(partial(_check, cfg=cfg), rows, chunksize=32), total=len(rows), desc="hygiene"))

    kept, rejected = [], []
    for row, res in zip(rows, results):
        if "reject" in res:
            rejected.append({**row, "reason": res["reject"], "voiced_frac": res["frac"]})
            continue
        for k, (start, end, frac) in enumerate(res["segments"]):
            kept.append({**row, "seg_id": f"{row['id']}#{k}", "seg_start_s": round(start, 4),
                         "seg_end_s": round(end, 4), "voiced_frac": round(frac, 4)})
    kept_df = pd.DataFrame(kept)
    rejected_df = pd.DataFrame(rejected, columns=[*raw.columns, "reason", "voiced_frac"])
    write_csv("data/hygiene/manifest.csv", kept_df)
    write_csv("data/hygiene/rejected.csv", rejected_df)
    write_json("metrics/hygiene.json", summarize(raw, kept_df, rejected_df, cfg))


def summarize(raw: pd.DataFrame, kept: pd.DataFrame, rejected: pd.DataFrame, cfg: dict) -> dict:
    """Kept/rejected files and minutes per package and class, and the music minutes kept."""
    kept_min = (kept["seg_end_s"] - kept["seg_start_s"]).groupby(kept["id"]).sum() / 60
    raw = raw.assign(kept_min=raw["id"].map(kept_min).fillna(0.0), minutes=raw["duration_s"] / 60,
                     rejected=raw["id"].isin(rejected["id"]),
                     music=[is_music(p, s) for p, s in zip(raw["package"], raw["source_path"])])

    def block(df: pd.DataFrame) -> dict:
        return {"files": int(len(df)), "files_kept": int((~df["rejected"]).sum()),
                "files_rejected": int(df["rejected"].sum()), "minutes": round(float(df["minutes"].sum()), 3),
                "minutes_kept": round(float(df["kept_min"].sum()), 3)}

    music = raw[raw["music"]]
    return {
        "speech_vad": cfg["speech_vad"], "nonspeech_vad": cfg["nonspeech_vad"], "webrtc_mode": cfg["webrtc_mode"], "frame_ms": cfg["frame_ms"],
        "per_class": {label: block(df) for label, df in raw.groupby("label")},
        "per_package": {f"{pkg}/{label}": block(df) for (pkg, label), df in raw.groupby(["package", "label"])},
        "segments_kept": int(len(kept)),
        "music_minutes_kept_frac": round(float(music["kept_min"].sum() / music["minutes"].sum()), 4)
        if len(music) else None,
        "nonspeech_rejected_files": sorted(rejected.loc[rejected["label"] == "nonspeech", "id"].tolist()),
    }

