"""Planning the factorial design: which source, noise and offsets make each clip.

Planning is separate from rendering so the plan is a cheap, seeded, sequential
computation (the same params give the same plan) and rendering can run in parallel.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from qvad.data.sources.builtin import is_music
from qvad.data.grouping import assign_groups, merge_duplicate_groups


def split_pools(segments: pd.DataFrame, noise_packages: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(sources, noise pool): non-music files of ``noise_packages`` become noise, never sources."""
    is_noise = segments["package"].isin(noise_packages) & (segments["label"] == "nonspeech") & ~np.array(
        [is_music(p, s) for p, s in zip(segments["package"], segments["source_path"])], dtype=bool)
    return segments[~is_noise].copy(), segments[is_noise].copy()


def plan_groups(sources: pd.DataFrame, noise: pd.DataFrame, fractions: list[float], seed: int) -> pd.DataFrame:
    """The group -> split table for sources (stratified by class) and noise sources.

    Decided before mixing because a clip's noise must come from a noise source of the
    clip's own split: test noise stays unheard in training.
    """
    rep = merge_duplicate_groups(pd.concat([sources, noise]))
    rows = [(g, "source", lab) for g, lab in sources.groupby("group")["label"].first().items()]
    rows += [(g, "noise", "noise") for g in sorted(noise["group"].unique())]
    table = pd.DataFrame(rows, columns=["group", "kind", "stratum"])
    table["unit"] = table["group"].map(rep)
    units = table.drop_duplicates("unit")[["unit", "stratum"]]
    table["split"] = table["unit"].map(assign_groups(units, fractions, seed))
    return table[["group", "kind", "stratum", "unit", "split"]].sort_values("group").reset_index(drop=True)


def plan_clips(sources: pd.DataFrame, noise: pd.DataFrame, groups: pd.DataFrame, cfg: dict,
               seed: int) -> pd.DataFrame:
    """One row per clip of the (class x duration x SNR) design, clips_per_cell each.

    Groups are visited round-robin in a seeded order, so each speaker or source gives
    about the same number of clips: a long track or a prolific speaker cannot decide a
    class. Noise is drawn from noise groups of the clip's split.
    """
    rng = np.random.default_rng(seed)
    split_of = dict(zip(groups["group"], groups["split"]))
    noise_by_split = {s: df for s, df in noise.groupby(noise["group"].map(split_of))}
    seg_len = sources["seg_end_s"] - sources["seg_start_s"]
    rows = []
    for label in ("speech", "nonspeech"):
        cls = sources[sources["label"] == label]
        order = sorted(cls["group"].unique())
        order = [order[i] for i in rng.permutation(len(order))]
        cycle = itertools.cycle(order)
        for dur_ms, snr in itertools.product(cfg["durations_ms"], cfg["snrs_db"]):
            dur = dur_ms / 1000
            long_enough = cls[seg_len.loc[cls.index] >= dur]
            eligible = set(long_enough["group"])
            if not eligible:
                raise ValueError(f"no {label} segment is at least {dur_ms} ms long")
            for k in range(cfg["clips_per_cell"]):
                group = next(g for g in cycle if g in eligible)
                seg = long_enough[long_enough["group"] == group].iloc[rng.integers(
                    (long_enough["group"] == group).sum())]
                kind = cfg["noise_types"][rng.integers(len(cfg["noise_types"]))]
                nrow = None
                if kind == "ambience":
                    pool = noise_by_split.get(split_of[group])
                    if pool is None or pool.empty:
                        raise ValueError(f"no ambience noise source in split {split_of[group]!r}")
                    nrow = pool.iloc[rng.integers(len(pool))]
                rows.append({
                    "clip_id": f"{label}-{dur_ms:04d}ms-{'m' if snr < 0 else 'p'}{abs(snr):02d}dB-{k:03d}",
                    "label": label, "duration_ms": dur_ms, "snr_db": snr, "group": group,
                    "split": split_of[group], "seg_id": seg["seg_id"], "source_id": seg["id"],
                    "source_path": seg["path"], "package": seg["package"], "category": seg["category"],
                    "orig_sr": seg["orig_sr"],
                    "audio_md5": seg["audio_md5"], "seg_start_s": seg["seg_start_s"], "seg_end_s": seg["seg_end_s"],
                    "noise_type": kind,
                    "noise_id": nrow["id"] if nrow is not None else "",
                    "noise_group": nrow["group"] if nrow is not None else f"synthetic:{kind}:{label}-{dur_ms}-{snr}-{k}",
                    "noise_path": nrow["path"] if nrow is not None else "",
                    "band": "telephone" if rng.random() < cfg["band_limit_prob"] else "full",
                    "clip_seed": int(rng.integers(2**31)),
                })
    return pd.DataFrame(rows)
