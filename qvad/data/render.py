"""Rendering one planned clip: cut, band-limit, mix at the exact SNR, centre in the container."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from qvad import SAMPLE_RATE
from qvad.data.signal import active_mask, band_limit, colored_noise, in_container, mix_at_snr
from qvad.audio.vad import webrtc_frames

CUT_TRIES = 8


def _read(path: str, start: int, n: int) -> np.ndarray:
    x, _ = sf.read(path, start=start, frames=n, dtype="float32", always_2d=False)
    return x


def cut_source(row: dict, n: int, rng: np.random.Generator, min_voiced: float) -> tuple[np.ndarray, float]:
    """A random ``n``-sample cut of the segment; for speech, one that is mostly voiced.

    A 200 ms cut from a region that is 70 % voiced can still land in a pause, so up to
    CUT_TRIES offsets are tried and the most voiced one is kept. Returns (cut, start_s).
    """
    first = int(round(row["seg_start_s"] * SAMPLE_RATE))
    span = max(int(round(row["seg_end_s"] * SAMPLE_RATE)) - first - n, 0)
    best, best_frac, best_start = None, -1.0, first
    for _ in range(CUT_TRIES if row["label"] == "speech" else 1):
        start = first + int(rng.integers(span + 1))
        x = _read(row["source_path"], start, n)
        if x.size < n:
            x = np.pad(x, (0, n - x.size))
        frac = float(webrtc_frames(x, 3, 10).mean()) if row["label"] == "speech" else 1.0
        if frac > best_frac:
            best, best_frac, best_start = x, frac, start
        if frac >= min_voiced:
            break
    return best, best_start / SAMPLE_RATE


def noise_for(row: dict, n: int, rng: np.random.Generator) -> np.ndarray:
    """Synthetic noise, or a random stretch of the planned ambience (looped if short)."""
    if row["noise_type"] != "ambience":
        return colored_noise(row["noise_type"], n, rng)
    amb, _ = sf.read(row["noise_path"], dtype="float32", always_2d=False)
    if amb.size < n:
        amb = np.tile(amb, int(np.ceil(n / amb.size)))
    start = int(rng.integers(amb.size - n + 1))
    return amb[start:start + n]


def render_clip(row: dict, cfg: dict, min_voiced: float) -> tuple[np.ndarray, dict]:
    """The finished (unnormalised) clip and facts measured on it for the manifest."""
    rng = np.random.default_rng(row["clip_seed"])
    n = int(round(row["duration_ms"] * SAMPLE_RATE / 1000))
    sig, start_s = cut_source(row, n, rng, min_voiced)
    if row["band"] == "telephone":
        sig = band_limit(sig, *cfg["band_hz"])
    mask = active_mask(sig, row["label"])
    clip = mix_at_snr(sig, noise_for(row, n, rng), row["snr_db"], mask)
    container = int(round(cfg["container_ms"] * SAMPLE_RATE / 1000))
    out = in_container(clip, container, cfg["container_noise_rel_db"], rng) if container else clip
    return out, {"cut_start_s": round(start_s, 4), "cut_end_s": round(start_s + n / SAMPLE_RATE, 4),
                 "active_frac": round(float(mask.mean()), 4), "container_ms": max(cfg["container_ms"], 0)
                 if container > n else 0, "samples": int(out.size)}
