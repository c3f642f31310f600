"""The mix_snr stage: the factorial (class x duration x SNR) clips, mixed with split-disjoint noise."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from qvad.common.atomic import write_csv, write_json
from qvad.audio.io import write_wav
from qvad.data.manifest import read_manifest
from qvad.data.mix_plan import plan_clips, plan_groups, split_pools
from qvad.data.signal import SYNTHETIC_NOISES
from qvad.common.params import get, require
from qvad.data.render import render_clip

OUT = Path("data/mixed")


def _render(row: dict, cfg: dict, min_voiced: float) -> dict:
    x, facts = render_clip(row, cfg, min_voiced)
    path = OUT / "audio" / f"{row['clip_id']}.wav"
    write_wav(path, x)
    return {**row, **facts, "path": path.as_posix()}


def check(cfg: dict) -> None:
    """Fail early, naming the key, on a params value that cannot work."""
    require(all(d > 0 for d in cfg["durations_ms"]), "mix.durations_ms", "durations must be > 0")
    require(cfg["clips_per_cell"] > 0, "mix.clips_per_cell", "must be > 0")
    require(0 <= cfg["band_limit_prob"] <= 1, "mix.band_limit_prob", "must be within [0, 1]")
    require(set(cfg["noise_types"]) <= {*SYNTHETIC_NOISES, "ambience"} and cfg["noise_types"],
            "mix.noise_types", f"choose from {[*SYNTHETIC_NOISES, 'ambience']}")
    require(cfg["container_ms"] >= 0, "mix.container_ms", "must be >= 0 (0 = off)")
    require(0 < cfg["band_hz"][0] < cfg["band_hz"][1] < 8000, "mix.band_hz", "need 0 < low < high < 8000")


def mix_snr(params: dict) -> None:
    """Run the mix_snr stage with ``params`` (params.yaml as a dict)."""
    cfg = dict(get(params, "mix"))
    check(cfg)
    seed = int(params["seed"])
    segments = read_manifest("data/hygiene/manifest.csv", ["seg_id", "id", "path", "label", "group",
                                                           "seg_start_s", "seg_end_s", "audio_md5"])
    sources, noise = split_pools(segments, cfg["noise_packages"])
    groups = plan_groups(sources, noise, get(params, "split.fractions"), seed)
    plan = plan_clips(sources, noise, groups, cfg, seed)
    for label, df in plan.groupby("label"):
        top = df["group"].value_counts(normalize=True)
        require(top.iloc[0] <= cfg["max_group_share"], "mix.max_group_share",
                f"{label} group {top.index[0]!r} would give {top.iloc[0]:.3f} of the class: too few "
                f"{label} groups ({len(top)}) for this cap")

    if OUT.exists():
        shutil.rmtree(OUT)
    min_voiced = float(get(params, "hygiene.min_speech_frac"))
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        rows = list(tqdm(pool.map(partial(_render, cfg=cfg, min_voiced=min_voiced), plan.to_dict("records"),
                                  chunksize=32), total=len(plan), desc="mix", mininterval=5))
    manifest = pd.DataFrame(rows).sort_values("clip_id").reset_index(drop=True)
    write_csv(OUT / "manifest.csv", manifest)
    write_csv(OUT / "groups.csv", groups)
    write_json("metrics/mix.json", summarize(manifest, groups))


def summarize(manifest: pd.DataFrame, groups: pd.DataFrame) -> dict:
    """Counts per cell, group dominance and noise use: what a reviewer checks first."""
    cells = manifest.groupby(["label", "duration_ms", "snr_db"]).size()
    share = {label: round(float(df["group"].value_counts(normalize=True).iloc[0]), 4)
             for label, df in manifest.groupby("label")}
    return {
        "clips": int(len(manifest)),
        "cells": {f"{lab}/{d}ms/{s}dB": int(n) for (lab, d, s), n in cells.items()},
        "largest_group_share": share,
        "largest_group": {label: str(df["group"].value_counts().index[0]) for label, df in manifest.groupby("label")},
        "groups_used": {label: int(df["group"].nunique()) for label, df in manifest.groupby("label")},
        "noise_types": {k: int(v) for k, v in manifest["noise_type"].value_counts().sort_index().items()},
        "band": {k: int(v) for k, v in manifest["band"].value_counts().sort_index().items()},
        "noise_groups": int((groups["kind"] == "noise").sum()),
    }

