"""Decode a user's audio file (or array) to 16 kHz mono float32, naming what is wrong with it.

:func:`qvad.audio.io.load_audio` serves the pipeline, which rejects digital silence and reads
whole files at once. User input needs more: digital silence is a valid answer ("no speech"),
a file may be hours long (it is decoded block by block and resampled as a stream, so memory
holds only the 16 kHz mono result; the stream gives the same samples as ``load_audio``'s
one-shot resampling, bit for bit), and a half-written WAV whose header promises more audio
than the file holds is reported rather than silently shortened (libsndfile reads what is
there). Every problem raises :class:`~qvad.audio.io.AudioError` with the file and the reason.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np
import soundfile as sf
import soxr

from qvad import SAMPLE_RATE
from qvad.audio.io import AudioError, to_mono

SILENCE_PEAK = 2.0 ** -15
"""A decoded signal whose peak is at or below one 16-bit LSB (-90.3 dBFS) is digital silence."""

BLOCK_SECONDS = 30.0
"""Decode this much audio at a time."""

_FORMAT_EXTENSIONS = {
    "WAV": ("wav", "wave"), "WAVEX": ("wav",), "RF64": ("rf64",), "W64": ("w64",),
    "AIFF": ("aiff", "aif", "aifc"), "AU": ("au", "snd"), "AVR": ("avr",), "CAF": ("caf",),
    "FLAC": ("flac",), "HTK": ("htk",), "IRCAM": ("sf", "ircam"), "MAT4": ("mat",),
    "MAT5": ("mat",), "MP3": ("mp3",), "MPC2K": ("mpc2k",), "NIST": ("nist", "sph"),
    "OGG": ("ogg", "oga", "opus"), "PAF": ("paf",), "PVF": ("pvf",), "SD2": ("sd2",),
    "SDS": ("sds",), "SVX": ("svx", "8svx", "iff"), "VOC": ("voc",), "WVE": ("wve",), "XI": ("xi",),
}
"""File name endings of the container formats libsndfile reads (headerless RAW is left out)."""


def audio_extensions() -> frozenset[str]:
    """Lower-case extensions (no dot) of every format this soundfile/libsndfile build reads."""
    formats = sf.available_formats()
    return frozenset(ext for fmt, exts in _FORMAT_EXTENSIONS.items() if fmt in formats for ext in exts)


def find_audio(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files to score: each file given as is, each folder searched recursively for audio files.

    A file named explicitly is always returned (whatever its name, so that a wrong file gets
    an error row); inside folders only names ending in a format soundfile reads are taken
    (hidden files and folders skipped), sorted, so the order does not depend on the file system.
    A path that does not exist is returned too: decoding it gives its error row.
    """
    exts = audio_extensions()
    out: list[Path] = []
    for item in inputs:
        path = Path(item)
        if not path.is_dir():
            out.append(path)
            continue
        found = []
        for root, dirs, files in os.walk(path, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [Path(root) / f for f in files
                      if not f.startswith(".") and f.rsplit(".", 1)[-1].lower() in exts and "." in f]
        out += sorted(found)
    return out


class Decoded(NamedTuple):
    """A decoded file: 16 kHz mono float32 samples and facts about the original."""

    audio: np.ndarray
    orig_sr: int
    channels: int
    format: str

    @property
    def duration_s(self) -> float:
        return self.audio.size / SAMPLE_RATE

    @property
    def silent(self) -> bool:
        return is_silent(self.audio)


def is_silent(x: np.ndarray) -> bool:
    """Digital silence: every sample within one 16-bit LSB of zero (an empty array counts too)."""
    return x.size == 0 or float(np.max(np.abs(x))) <= SILENCE_PEAK


def _wav_truncation(path: Path, info: sf._SoundFileInfo) -> str | None:
    """For a RIFF/WAVE file, the reason if its data chunk promises more bytes than the file has."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
                return None
            fmt = "<I" if head[:4] == b"RIFF" else ">I"
            size = path.stat().st_size
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                cid, clen = chunk[:4], struct.unpack(fmt, chunk[4:])[0]
                if cid == b"data":
                    available = size - f.tell()
                    if clen in (0, 0xFFFFFFFF) or clen <= available:
                        return None  # 0 / -1: streaming writers that never filled in the size
                    frame_bytes = max(available / max(info.frames, 1), 1e-9)
                    declared_s = clen / frame_bytes / info.samplerate if info.frames else float("nan")
                    return (f"truncated file (half-written?): its header declares {clen} bytes of audio "
                            f"({declared_s:.3f} s) but only {available} bytes "
                            f"({info.frames / info.samplerate:.3f} s) are present")
                f.seek(clen + (clen & 1), os.SEEK_CUR)
    except (OSError, struct.error):
        return None


def open_info(path: str | os.PathLike) -> sf._SoundFileInfo:
    """soundfile's header information, or :class:`AudioError` naming why the file cannot be used."""
    path = Path(path)
    if path.is_dir():
        raise AudioError(path, "is a folder, not a file")
    if not path.exists():
        raise AudioError(path, "no such file")
    if not path.is_file():
        raise AudioError(path, "not a regular file")
    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except PermissionError as exc:
        raise AudioError(path, f"cannot read the file (permission denied: {exc.strerror})") from exc
    except OSError as exc:
        raise AudioError(path, f"cannot read the file ({exc.strerror or exc})") from exc
    if size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile: unknown format, bad or truncated header
        raise AudioError(path, f"unreadable audio: not a format soundfile reads, or a corrupt/truncated header "
                               f"({type(exc).__name__}: {exc})") from exc
    if info.samplerate <= 0:
        raise AudioError(path, f"invalid sample rate {info.samplerate}")
    if info.channels <= 0:
        raise AudioError(path, f"invalid channel count {info.channels}")
    return info


def decode_file(path: str | os.PathLike, max_seconds: float | None = None,
                block_seconds: float = BLOCK_SECONDS) -> Decoded:
    """Decode ``path`` to 16 kHz mono float32 (channels averaged, soxr HQ resampling).

    Raises :class:`AudioError` for a missing, unreadable, empty, zero-length, truncated,
    non-finite (NaN/Inf) or too long (``max_seconds``, checked from the header before decoding
    and again while decoding) file. Digital silence is returned, not refused (see ``Decoded.silent``).
    """
    path = Path(path)
    info = open_info(path)
    sr, channels = int(info.samplerate), int(info.channels)
    declared = info.frames / sr if info.frames > 0 else 0.0
    if max_seconds is not None and declared > max_seconds:
        raise AudioError(path, f"too long to decode: {declared:.1f} s > the limit of {max_seconds:g} s "
                               "(raise --max-duration)")
    if info.format in ("WAV", "WAVEX"):
        reason = _wav_truncation(path, info)
        if reason:
            raise AudioError(path, reason)
    stream = soxr.ResampleStream(sr, SAMPLE_RATE, 1, dtype="float32", quality="HQ") if sr != SAMPLE_RATE else None
    parts: list[np.ndarray] = []
    frames_read = 0
    block = max(int(block_seconds * sr), 1)
    try:
        with sf.SoundFile(str(path)) as f:
            while True:
                data = f.read(frames=block, dtype="float32", always_2d=True)
                if data.shape[0] == 0:
                    break
                if not np.isfinite(data).all():
                    bad = int(np.argmax(~np.isfinite(data).all(axis=1)))
                    raise AudioError(path, f"non-finite samples (NaN or Inf), first at {(frames_read + bad) / sr:.3f} s")
                frames_read += data.shape[0]
                if max_seconds is not None and frames_read / sr > max_seconds:
                    raise AudioError(path, f"too long to decode: more than the limit of {max_seconds:g} s "
                                           "(raise --max-duration)")
                mono = np.ascontiguousarray(to_mono(data), dtype=np.float32)
                parts.append(stream.resample_chunk(mono, last=False) if stream is not None else mono)
    except AudioError:
        raise
    except Exception as exc:  # corrupt data past a valid header
        raise AudioError(path, f"unreadable audio data after {frames_read / sr:.3f} s "
                               f"({type(exc).__name__}: {exc})") from exc
    if frames_read == 0:
        raise AudioError(path, "zero-length audio (the header is valid but holds no samples)")
    if stream is not None:
        parts.append(stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    audio = np.concatenate(parts).astype(np.float32, copy=False)
    if audio.size == 0:
        raise AudioError(path, "zero-length audio after resampling to 16 kHz")
    return Decoded(audio, sr, channels, str(info.format))


def as_mono_16k(x: np.ndarray, sr: int = SAMPLE_RATE, name: str = "<array>") -> np.ndarray:
    """An in-memory signal as 16 kHz mono float32: ``(n,)`` or ``(n, channels)``, float or int PCM."""
    arr = np.asarray(x)
    if arr.ndim == 2 and arr.shape[0] < arr.shape[1] and arr.shape[0] <= 8:
        raise AudioError(name, f"shape {arr.shape} looks like (channels, samples); pass (samples, channels)")
    if arr.ndim not in (1, 2):
        raise AudioError(name, f"expected a 1-D signal or (samples, channels), got shape {arr.shape}")
    if arr.size == 0:
        raise AudioError(name, "zero-length audio")
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / float(-np.iinfo(arr.dtype).min)
    elif not np.issubdtype(arr.dtype, np.floating):
        raise AudioError(name, f"expected float or integer samples, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise AudioError(name, "non-finite samples (NaN or Inf)")
    if int(sr) <= 0:
        raise AudioError(name, f"invalid sample rate {sr}")
    mono = np.ascontiguousarray(to_mono(arr.astype(np.float32, copy=False)), dtype=np.float32)
    if int(sr) == SAMPLE_RATE:
        return mono
    return soxr.resample(mono, int(sr), SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)
