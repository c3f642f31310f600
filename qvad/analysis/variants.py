"""Psychometric variants: degraded versions of TEST source segments only.

Each base is a 1 s cut of a held-out test segment; every condition (a shorter
centred cut, noise at an SNR, a telephone or AM-radio channel, a reverberant room)
is derived from it, then put in the same container and normalised as the training
data, so the only thing that varies is the degradation.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from scipy.signal import butter, fftconvolve, sosfiltfilt

from qvad import SAMPLE_RATE
from qvad.data.signal import active_mask, band_limit, colored_noise, in_container, mix_at_snr
from qvad.data.level import normalize_as
from qvad.data.render import VoicingError, cut_source, voiced_fraction


def held_out_segments(segments: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    """Hygiene segments whose source group was assigned to the test split (and nothing else)."""
    test = set(groups.loc[(groups["split"] == "test") & (groups["kind"] == "source"), "group"])
    return segments[segments["group"].isin(test)]


def pick_bases(segments: pd.DataFrame, per_class: int | None, min_s: float, seed: int) -> pd.DataFrame:
    """Up to ``per_class`` segments per class (None: all, in order), round-robin over groups, each >= ``min_s``."""
    rng = np.random.default_rng(seed)
    long = segments[(segments["seg_end_s"] - segments["seg_start_s"]) >= min_s]
    picked = []
    for _, cls in sorted(long.groupby("label"), key=lambda kv: kv[0]):
        by_group = {g: df.iloc[rng.permutation(len(df))] for g, df in sorted(cls.groupby("group"))}
        order = list(by_group)
        rng.shuffle(order)
        taken, depth = [], 0
        while (per_class is None or len(taken) < per_class) and any(depth < len(by_group[g]) for g in order):
            taken += [by_group[g].iloc[depth] for g in order if depth < len(by_group[g])]
            depth += 1
        picked += taken if per_class is None else taken[:per_class]
    return pd.DataFrame(picked).reset_index(drop=True)


def reverberate(x: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a synthetic room impulse response: exponentially decaying noise of ``rt60``."""
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    rir = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # -60 dB at rt60
    rir[0] = 1.0  # direct path
    y = fftconvolve(x, rir / np.sqrt(np.sum(rir**2)))[: x.size]
    return y.astype(np.float32)


def low_pass(x: np.ndarray, cutoff_hz: float) -> np.ndarray:
    """An AM-radio-like channel: 4th-order Butterworth low-pass."""
    sos = butter(4, cutoff_hz, btype="lowpass", fs=SAMPLE_RATE, output="sos")
    return sosfiltfilt(sos, x).astype(np.float32)


def conditions(cfg: dict) -> list[dict]:
    """Every (condition, level, duration) of the design in params ``psychometric``."""
    out = [{"condition": "duration", "level": d, "duration_ms": d, "snr_db": None} for d in cfg["durations_ms"]]
    out += [{"condition": f"snr@{d}ms", "level": s, "duration_ms": d, "snr_db": s}
            for d in cfg["snr_durations_ms"] for s in cfg["snrs_db"]]
    out += [{"condition": "band", "level": b, "duration_ms": cfg["base_ms"], "snr_db": None}
            for b in ("telephone", "am_radio")]
    out += [{"condition": "reverb", "level": r, "duration_ms": cfg["base_ms"], "snr_db": None} for r in cfg["rt60_s"]]
    return out


def render_variant(base: np.ndarray, label: str, cond: dict, cfg: dict, mix_cfg: dict, norm_cfg: dict,
                   rng: np.random.Generator) -> np.ndarray:
    """One degraded, containered, normalised clip from a base cut."""
    n = int(round(cond["duration_ms"] * SAMPLE_RATE / 1000))
    start = (base.size - n) // 2
    x = base[start:start + n].copy()
    if cond["condition"] == "band":
        x = band_limit(x, *mix_cfg["band_hz"]) if cond["level"] == "telephone" else low_pass(x, cfg["am_cutoff_hz"])
    elif cond["condition"] == "reverb":
        x = reverberate(x, float(cond["level"]), rng)
    if cond["snr_db"] is not None:
        noise = colored_noise(cfg["noise_types"][rng.integers(len(cfg["noise_types"]))], n, rng)
        x = mix_at_snr(x, noise, cond["snr_db"], active_mask(x, label))
    container = int(round(mix_cfg["container_ms"] * SAMPLE_RATE / 1000))
    if container:
        x = in_container(x, container, mix_cfg["container_noise_rel_db"], rng)
    y, _ = normalize_as(x, norm_cfg)
    return y


def centre_cuts_voiced(cfg: dict, min_voiced: float) -> Callable[[np.ndarray, int], bool]:
    """Check that every centred cut the design takes from a speech base meets the voicing floor.

    The duration conditions keep only the base's centre (20 ms of a 1 s cut can be a pause), so a
    base qualifies only if each of those centre cuts is itself voiced enough.
    """
    lengths = sorted({int(round(c["duration_ms"] * SAMPLE_RATE / 1000)) for c in conditions(cfg)})

    def ok(base: np.ndarray, _start: int) -> bool:
        return all(voiced_fraction(base[(base.size - n) // 2:(base.size - n) // 2 + n]) >= min_voiced
                   for n in lengths)
    return ok


def build_variants(candidates: pd.DataFrame, per_class: int, cfg: dict, mix_cfg: dict, norm_cfg: dict,
                   min_voiced: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, list[np.ndarray]]:
    """All variants of ``per_class`` bases per class: (bases, table, audio list), table and audio in one order.

    Candidates come in pick order; a speech candidate none of whose cuts has every centred
    sub-cut voiced (:func:`centre_cuts_voiced`) is skipped for the next one of its class (a
    class may end with fewer bases when the test split has too few long segments; the stage
    reports the counts). ``voiced_frac`` is recorded per variant (of the clean centre cut,
    before any degradation) so the floor can be checked afterwards.
    """
    rows, audio, used = [], [], []
    n_base = int(round(cfg["base_ms"] * SAMPLE_RATE / 1000))
    ok = centre_cuts_voiced(cfg, min_voiced)
    for label, cls in candidates.groupby("label", sort=True):
        taken = 0
        for base in cls.to_dict("records"):
            if taken == per_class:
                break
            b = len(used)
            rng = np.random.default_rng([seed, b])
            try:
                cut, _, _ = cut_source({**base, "source_path": base["path"]}, n_base, rng, min_voiced,
                                       ok if label == "speech" else None)
            except VoicingError:
                continue
            used.append(base)
            taken += 1
            for c, cond in enumerate(conditions(cfg)):
                n = int(round(cond["duration_ms"] * SAMPLE_RATE / 1000))
                centre = cut[(cut.size - n) // 2:(cut.size - n) // 2 + n]
                audio.append(render_variant(cut, base["label"], cond, cfg, mix_cfg, norm_cfg,
                                            np.random.default_rng([seed, b, c])))
                rows.append({"base": b, "seg_id": base["seg_id"], "group": base["group"],
                             "label": int(base["label"] == "speech"), "voiced_frac": round(voiced_fraction(centre), 4),
                             **cond})
    return pd.DataFrame(used).reset_index(drop=True), pd.DataFrame(rows), audio
