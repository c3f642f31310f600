"""Signal operations for building noisy clips: noise, band-limiting, exact SNR, containers."""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, sosfiltfilt

from qvad import SAMPLE_RATE
from qvad.audio.vad import webrtc_frames

SYNTHETIC_NOISES = ("white", "pink", "brown")


def colored_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white, pink (1/f power) or brown (1/f^2 power) noise, shaped in the frequency domain."""
    if kind not in SYNTHETIC_NOISES:
        raise ValueError(f"unknown noise type {kind!r}: expected one of {SYNTHETIC_NOISES}")
    white = rng.standard_normal(n)
    if kind != "white":
        spec = np.fft.rfft(white)
        f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        f[0] = f[1] if n > 1 else 1.0
        spec /= np.sqrt(f) if kind == "pink" else f
        white = np.fft.irfft(spec, n)
    white -= white.mean()
    return (white / max(np.sqrt(np.mean(white**2)), 1e-12)).astype(np.float32)


def band_limit(x: np.ndarray, lo_hz: float, hi_hz: float) -> np.ndarray:
    """Zero-phase band-pass (4th-order Butterworth): a telephone channel, applied to both classes."""
    sos = butter(4, [lo_hz, hi_hz], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    return sosfiltfilt(sos, x).astype(np.float32)


def active_mask(x: np.ndarray, label: str, vad_mode: int = 3, floor_db: float = 40.0) -> np.ndarray:
    """Per-sample mask of the signal's active part, over which its power is measured.

    Speech: WebRTC-voiced 10 ms frames (pauses would otherwise make the SNR depend on how
    much silence a cut holds). Non-speech: frames within ``floor_db`` of the loudest frame.
    Falls back to every sample when nothing qualifies.
    """
    n = SAMPLE_RATE // 100
    frames = x.size // n
    if frames == 0:
        return np.ones(x.size, dtype=bool)
    if label == "speech":
        on = webrtc_frames(x, vad_mode, 10)
    else:
        energy = np.mean(x[: frames * n].reshape(frames, n) ** 2, axis=1) + 1e-20
        on = 10 * np.log10(energy) >= 10 * np.log10(energy.max()) - floor_db
    if not on.any():
        return np.ones(x.size, dtype=bool)
    mask = np.zeros(x.size, dtype=bool)
    mask[: frames * n] = np.repeat(on, n)
    return mask


def power(x: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean power over ``mask`` (all samples if None)."""
    sel = x if mask is None else x[mask]
    return float(np.mean(np.square(sel, dtype=np.float64)))


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float, mask: np.ndarray) -> np.ndarray:
    """``signal + g * noise`` with g chosen so that P_signal(active) / P_noise = snr_db exactly."""
    if signal.shape != noise.shape:
        raise ValueError(f"signal {signal.shape} and noise {noise.shape} differ in length")
    gain = np.sqrt(power(signal, mask) / (power(noise) * 10 ** (snr_db / 10)))
    return (signal + gain * noise).astype(np.float32)


def in_container(clip: np.ndarray, container_len: int, rel_db: float, rng: np.random.Generator) -> np.ndarray:
    """Centre ``clip`` in ``container_len`` samples of white noise ``rel_db`` below the clip's RMS.

    Qwen2-Audio turns 10-20 ms of audio into zero audio tokens; a container keeps every
    clip audible to the encoder while the clip's own duration is what is being tested.
    """
    if container_len <= clip.size:
        return clip
    floor = colored_noise("white", container_len, rng) * np.sqrt(power(clip)) * 10 ** (rel_db / 20)
    start = (container_len - clip.size) // 2
    floor[start:start + clip.size] += clip
    return floor.astype(np.float32)
