"""The mix_snr stage: the factorial (class x duration x SNR) clips, mixed with split-disjoint noise."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from qvad.common.atomic import write_csv, write_json
from qvad.audio.io import write_wav
from qvad.data.manifest import read_manifest
from qvad.data.mix_plan import plan_clips, plan_groups, split_pools
from qvad.data.signal import SYNTHETIC_NOISES
from qvad.common.params import get, require
from qvad.data.render import VoicingError, render_clip

OUT = Path("data/mixed")


def _render(row: dict, cfg: dict, min_voiced: float) -> dict:
    """Render and write one clip; a speech segment with no voiced-enough cut comes back marked."""
    try:
        x, facts = render_clip(row, cfg, min_voiced)
    except VoicingError as err:
        return {**row, "voicing_error": str(err)}
    path = OUT / "audio" / f"{row['clip_id']}.wav"
    write_wav(path, x)
    return {**row, **facts, "path": path.as_posix()}


def replace_unvoiced(rows: list[dict], sources: pd.DataFrame, cfg: dict, min_voiced: float) -> list[dict]:
    """Re-plan each clip whose speech segment had no cut over the voicing floor.

    The replacement is another segment of the same speaker group, long enough for the clip,
    tried in an order fixed by the clip's seed; ``replaced_seg_id`` records what was dropped.
    If the whole group has no usable segment the stage fails, naming the clip and the group.
    """
    out = []
    for row in rows:
        if "voicing_error" not in row:
            out.append(row)
            continue
        failed = row.pop("voicing_error")
        dur = row["duration_ms"] / 1000
        pool = sources[(sources["group"] == row["group"]) & (sources["label"] == row["label"])
                       & ((sources["seg_end_s"] - sources["seg_start_s"]) >= dur)
                       & (sources["seg_id"] != row["seg_id"])]
        order = np.random.default_rng(row["clip_seed"]).permutation(len(pool))
        for seg in (pool.iloc[i] for i in order):
            candidate = {**row, "seg_id": seg["seg_id"], "source_id": seg["id"], "source_path": seg["path"],
                         "audio_md5": seg["audio_md5"], "seg_start_s": seg["seg_start_s"],
                         "seg_end_s": seg["seg_end_s"], "category": seg["category"]}
            rendered = _render(candidate, cfg, min_voiced)
            if "voicing_error" not in rendered:
                out.append({**rendered, "replaced_seg_id": row["seg_id"]})
                break
        else:
            raise VoicingError(f"clip {row['clip_id']}: no segment of group {row['group']!r} has a voiced-enough "
                               f"cut ({failed})")
    return out


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
    segments = read_manifest("data/hygiene/manifest.csv", ["seg_id", "id", "path", "label", "group", "category",
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
    rows = replace_unvoiced(rows, sources, cfg, min_voiced)
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
        "speech_cuts_replaced": int(manifest["replaced_seg_id"].notna().sum()) if "replaced_seg_id" in manifest else 0,
    }

