"""Rendering one planned clip: cut, band-limit, mix at the exact SNR, centre in the container."""

from __future__ import annotations

import itertools
from typing import Callable

import numpy as np
import soundfile as sf

from qvad import SAMPLE_RATE
from qvad.audio.vad import webrtc_frames
from qvad.data.signal import (
    active_mask,
    band_limit,
    colored_noise,
    in_container,
    mix_at_snr,
)

CUT_TRIES = 8
VOICING_FRAME_MS = 10
"""WebRTC frames (mode 3) for the voicing floor: 10 ms, so a 20 ms cut still has two frames."""


class VoicingError(ValueError):
    """No cut of a speech segment reaches the voicing floor: the clip would be speech in name only."""


def voiced_fraction(x: np.ndarray) -> float:
    """Share of 10 ms frames that WebRTC (mode 3) calls voiced; 0 for less than one frame."""
    flags = webrtc_frames(x, 3, VOICING_FRAME_MS)
    return float(flags.mean()) if flags.size else 0.0


def _read(path: str, start: int, n: int) -> np.ndarray:
    x, _ = sf.read(path, start=start, frames=n, dtype="float32", always_2d=False)
    return x if x.size >= n else np.pad(x, (0, n - x.size))


def cut_source(row: dict, n: int, rng: np.random.Generator, min_voiced: float,
               ok: Callable[[np.ndarray, int], bool] | None = None) -> tuple[np.ndarray, float, float]:
    """A random ``n``-sample cut of the segment; for speech, one that meets the voicing floor.

    A 200 ms cut from a region that is 70 % voiced can still land in a pause. Speech cuts must
    have at least ``min_voiced`` of their 10 ms frames voiced (and pass ``ok(cut, start)`` if
    given): CUT_TRIES random offsets are tried first, then every 10 ms offset of the segment in
    order; if none qualifies, :class:`VoicingError` names the segment. Non-speech takes one
    random cut. Returns ``(cut, start_s, voiced_fraction)``.
    """
    first = int(round(row["seg_start_s"] * SAMPLE_RATE))
    span = max(int(round(row["seg_end_s"] * SAMPLE_RATE)) - first - n, 0)
    if row["label"] != "speech":
        start = first + int(rng.integers(span + 1))
        x = _read(row["source_path"], start, n)
        return x, start / SAMPLE_RATE, voiced_fraction(x)
    segment = _read(row["source_path"], first, span + n)
    hop = SAMPLE_RATE * VOICING_FRAME_MS // 1000
    tries = (int(rng.integers(span + 1)) for _ in range(CUT_TRIES))  # drawn lazily: a hit stops the draws
    for offset in itertools.chain(tries, range(0, span + 1, hop)):
        x = segment[offset:offset + n]
        frac = voiced_fraction(x)
        if frac >= min_voiced and (ok is None or ok(x, offset)):
            return x.copy(), (first + offset) / SAMPLE_RATE, frac
    raise VoicingError(f"speech segment {row.get('seg_id', row['source_path'])!r}: no {1000 * n / SAMPLE_RATE:g} ms "
                       f"cut has >= {min_voiced:.0%} voiced 10 ms frames (hygiene.min_speech_frac)")


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
    sig, start_s, voiced = cut_source(row, n, rng, min_voiced)
    if row["band"] == "telephone":
        sig = band_limit(sig, *cfg["band_hz"])
    mask = active_mask(sig, row["label"])
    clip = mix_at_snr(sig, noise_for(row, n, rng), row["snr_db"], mask)
    container = int(round(cfg["container_ms"] * SAMPLE_RATE / 1000))
    out = in_container(clip, container, cfg["container_noise_rel_db"], rng) if container else clip
    return out, {"cut_start_s": round(start_s, 4), "cut_end_s": round(start_s + n / SAMPLE_RATE, 4),
                 "voiced_frac": round(voiced, 4), "active_frac": round(float(mask.mean()), 4), "container_ms": max(cfg["container_ms"], 0)
                 if container > n else 0, "samples": int(out.size)}
