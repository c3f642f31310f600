"""Decode, validate and write audio.

Every reader in the pipeline goes through :func:`load_audio`, so a corrupt, empty,
NaN-filled or truncated file fails in one place with an :class:`AudioError` that
names the file and the problem; callers decide whether to skip (bulk stages) or stop.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy.io import wavfile

from qvad import SAMPLE_RATE
from qvad.common.atomic import atomic_path


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def to_mono(x: np.ndarray) -> np.ndarray:
    """Average channels: ``(n, ch)`` -> ``(n,)``."""
    return x.mean(axis=1) if x.ndim == 2 else x


def resample(x: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """High-quality resampling with soxr (deterministic)."""
    if sr_in == sr_out:
        return x.astype(np.float32, copy=False)
    return soxr.resample(x.astype(np.float32, copy=False), sr_in, sr_out, quality="HQ").astype(np.float32)


def load_audio(
    path: str | os.PathLike,
    target_sr: int = SAMPLE_RATE,
    max_seconds: float | None = None,
    min_seconds: float = 0.0,
    start_seconds: float = 0.0,
) -> tuple[np.ndarray, int]:
    """Read ``path`` as mono float32 at ``target_sr``; return ``(samples, original_rate)``.

    ``max_seconds`` reads only that much (music tracks run for minutes), from
    ``start_seconds`` on (a region of a long recording is read without decoding the rest).
    Raises :class:`AudioError` for unreadable, empty, too short, non-finite or silent audio.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "no such file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        with sf.SoundFile(str(path)) as f:
            sr = int(f.samplerate)
            if sr <= 0:
                raise AudioError(path, f"invalid sample rate {sr}")
            if start_seconds:
                f.seek(min(int(round(start_seconds * sr)), f.frames))
            frames = -1 if max_seconds is None else int(round(max_seconds * sr))
            data = f.read(frames=frames, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as exc:  # libsndfile raises several types for corrupt data
        raise AudioError(path, f"unreadable audio ({type(exc).__name__}: {exc})") from exc
    if data.shape[0] == 0:
        raise AudioError(path, "zero-length audio (no frames)")
    if not np.isfinite(data).all():
        raise AudioError(path, "non-finite samples (NaN or Inf)")
    x = resample(to_mono(data), sr, target_sr)
    if x.shape[0] < int(min_seconds * target_sr):
        raise AudioError(path, f"too short ({x.shape[0] / target_sr:.3f} s < {min_seconds} s)")
    if float(np.max(np.abs(x))) == 0.0:
        raise AudioError(path, "digital silence (all samples are zero)")
    return x, sr


def write_wav(path: str | os.PathLike, x: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write float32 mono WAV atomically.

    scipy rather than soundfile: libsndfile stamps float WAVs with a PEAK chunk holding
    the write time, so the same samples would give different bytes (and DVC hashes).
    """
    with atomic_path(path, suffix=".wav") as tmp:
        wavfile.write(tmp, sr, np.asarray(x, dtype=np.float32))


def read_wav(path: str | os.PathLike) -> np.ndarray:
    """Read a pipeline-written 16 kHz float WAV (already validated when written)."""
    x, sr = sf.read(str(path), dtype="float32", always_2d=False)
    if sr != SAMPLE_RATE:
        raise AudioError(path, f"expected {SAMPLE_RATE} Hz, found {sr} Hz")
    return to_mono(x)
