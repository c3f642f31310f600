"""Long audio to speech segments: windows, per-frame probability, Silero-style segments, RTTM, scoring.

The detector answers one question per clip ("is there speech in it?"). A long recording is
cut into windows of ``window_ms`` every ``hop_ms`` (the last window is aligned to the end, so
every sample is heard); each window is one clip. Each 32 ms frame then takes the mean (or
min / max: ``pool``) of the P(speech) of the windows that cover its centre, and the frames go
through Silero's own post-processing, ``silero_vad.utils_vad.get_speech_timestamps_from_probs``
(threshold with hysteresis, ``min_silence_duration_ms`` merging gaps, ``min_speech_duration_ms``
dropping short segments, ``speech_pad_ms`` padding): the model and Silero differ only in where
the frame probabilities come from.

Frame-level evaluation (10 ms frames, F1 of the speech class) and boundary errors live here
too, so the long-audio benchmark and the tests measure segments the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from qvad import SAMPLE_RATE

FRAME = 512
"""Silero's frame at 16 kHz (32 ms): the post-processing below counts in these frames."""

POOLS = ("mean", "min", "max")


@dataclass(frozen=True)
class SegmentOptions:
    """Windowing and Silero-style post-processing; ``None`` fields take the model's defaults."""

    window_ms: int | None = None
    hop_ms: int | None = None
    threshold: float | None = None
    neg_threshold: float | None = None       # None: max(threshold - 0.15, 0.01), as Silero
    min_speech_ms: int = 250                 # Silero's min_speech_duration_ms
    min_silence_ms: int = 100                # Silero's min_silence_duration_ms (shorter gaps merge)
    speech_pad_ms: int = 30                  # Silero's speech_pad_ms
    max_speech_s: float = math.inf           # Silero's max_speech_duration_s
    pool: str = "mean"

    def check(self) -> None:
        """Raise ValueError naming the option that cannot work."""
        for name in ("window_ms", "hop_ms"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        for name in ("min_speech_ms", "min_silence_ms", "speech_pad_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("threshold", "neg_threshold"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if not self.max_speech_s > 0:
            raise ValueError(f"max_speech_s must be > 0, got {self.max_speech_s}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")


def window_starts(n_samples: int, window: int, hop: int) -> np.ndarray:
    """Start sample of each window: 0, hop, 2 hop, ... and a last one ending at the end of the audio.

    Audio no longer than one window is one window (the whole of it).
    """
    if window <= 0 or hop <= 0:
        raise ValueError(f"window and hop must be > 0 samples, got {window}, {hop}")
    if n_samples <= window:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, n_samples - window + 1, hop, dtype=np.int64)
    if starts[-1] + window < n_samples:
        starts = np.append(starts, n_samples - window)
    return starts


def frame_probs(starts: np.ndarray, probs: np.ndarray, window: int, n_samples: int,
                pool: str = "mean", frame: int = FRAME) -> np.ndarray:
    """P(speech) per ``frame``-sample frame: ``pool`` over the windows covering the frame's centre."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    starts, probs = np.asarray(starts, dtype=np.int64), np.asarray(probs, dtype=np.float64)
    if starts.shape != probs.shape or starts.size == 0:
        raise ValueError(f"starts {starts.shape} and probs {probs.shape} must be equal, non-empty")
    count = max(-(-n_samples // frame), 1)
    centres = np.minimum(np.arange(count) * frame + frame // 2, max(n_samples - 1, 0))
    ends = np.minimum(starts + window, max(n_samples, 1))
    cover = (starts[None, :] <= centres[:, None]) & (centres[:, None] < ends[None, :])
    # The windows tile the audio, so every centre is covered; guard anyway with the nearest window.
    empty = ~cover.any(axis=1)
    if empty.any():
        mid = starts + (ends - starts) / 2
        cover[np.flatnonzero(empty), np.abs(centres[empty, None] - mid[None, :]).argmin(axis=1)] = True
    if pool == "mean":
        return (cover * probs[None, :]).sum(axis=1) / cover.sum(axis=1)
    fill = np.inf if pool == "min" else -np.inf
    values = np.where(cover, probs[None, :], fill)
    return values.min(axis=1) if pool == "min" else values.max(axis=1)


def speech_segments(frame_p: Sequence[float], n_samples: int, threshold: float, *,
                    neg_threshold: float | None = None, min_speech_ms: int = 250, min_silence_ms: int = 100,
                    speech_pad_ms: int = 30, max_speech_s: float = math.inf) -> list[tuple[float, float, float]]:
    """``[(start_s, end_s, p_speech)]`` from 32 ms frame probabilities, by Silero's own post-processing.

    ``p_speech`` is the mean frame probability inside the segment. Times are rounded to 1 ms.
    """
    from silero_vad.utils_vad import get_speech_timestamps_from_probs

    probs = [float(p) for p in frame_p]
    if not probs:
        return []
    stamps = get_speech_timestamps_from_probs(
        probs, sampling_rate=SAMPLE_RATE, threshold=threshold, min_speech_duration_ms=min_speech_ms,
        max_speech_duration_s=max_speech_s, min_silence_duration_ms=min_silence_ms, speech_pad_ms=speech_pad_ms,
        return_seconds=False, neg_threshold=neg_threshold, audio_length_samples=int(n_samples),
    )
    return samples_to_segments(stamps, probs)


def samples_to_segments(stamps: Sequence[dict], frame_p: Sequence[float] | None = None,
                        frame: int = FRAME) -> list[tuple[float, float, float]]:
    """Silero's ``[{'start': sample, 'end': sample}]`` as ``(start_s, end_s, mean frame p)`` tuples."""
    out = []
    p = np.asarray(frame_p, dtype=np.float64) if frame_p is not None else None
    for s in stamps:
        start, end = int(s["start"]), int(s["end"])
        if p is not None and p.size:
            lo, hi = start // frame, max(-(-end // frame), start // frame + 1)
            mean = float(p[lo:hi].mean()) if hi > lo and lo < p.size else float("nan")
        else:
            mean = float("nan")
        out.append((round(start / SAMPLE_RATE, 3), round(end / SAMPLE_RATE, 3), round(mean, 6)))
    return out


def rttm_lines(file_id: str, segments: Sequence[tuple[float, float, float]]) -> list[str]:
    """NIST RTTM ``SPEAKER`` lines, one per segment, speaker name ``speech``.

    RTTM fields are space-separated, so white space in ``file_id`` becomes ``_``.
    """
    uri = "_".join(str(file_id).split()) or "audio"
    return [f"SPEAKER {uri} 1 {start:.3f} {end - start:.3f} <NA> <NA> speech <NA> <NA>"
            for start, end, _ in segments]


# ---------------------------------------------------------------------------------------------
# evaluation against known boundaries

def to_frames(segments: Sequence[Sequence[float]], duration_s: float, frame_s: float = 0.01) -> np.ndarray:
    """Boolean speech flag per ``frame_s`` frame: a frame is speech when its centre lies in a segment."""
    count = int(math.floor(duration_s / frame_s + 1e-9))
    centres = (np.arange(count) + 0.5) * frame_s
    flags = np.zeros(count, dtype=bool)
    for seg in segments:
        flags |= (centres >= seg[0]) & (centres < seg[1])
    return flags


def frame_scores(reference: np.ndarray, hypothesis: np.ndarray) -> dict[str, float]:
    """Precision, recall, F1 of the speech class, accuracy and false-alarm / miss rates, per frame."""
    ref, hyp = np.asarray(reference, dtype=bool), np.asarray(hypothesis, dtype=bool)
    if ref.shape != hyp.shape:
        raise ValueError(f"reference {ref.shape} and hypothesis {hyp.shape} differ")
    tp, fp = int((ref & hyp).sum()), int((~ref & hyp).sum())
    fn, tn = int((ref & ~hyp).sum()), int((~ref & ~hyp).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall, "accuracy": (tp + tn) / max(ref.size, 1),
            "false_alarm_rate": fp / (fp + tn) if fp + tn else 0.0, "miss_rate": fn / (tp + fn) if tp + fn else 0.0}


def boundary_errors(reference: Sequence[Sequence[float]], hypothesis: Sequence[Sequence[float]],
                    tolerance_s: float = 0.5) -> dict[str, float | int | None]:
    """How far each true speech boundary is from the nearest hypothesised boundary of the same kind.

    Onsets are matched to onsets and offsets to offsets (nearest, with replacement). Reports the
    mean and median absolute error in seconds over all true boundaries, and the share within
    ``tolerance_s``; None when the hypothesis has no segment at all (every boundary missed).
    """
    ref_on = np.array([s[0] for s in reference], dtype=float)
    ref_off = np.array([s[1] for s in reference], dtype=float)
    hyp_on = np.array([s[0] for s in hypothesis], dtype=float)
    hyp_off = np.array([s[1] for s in hypothesis], dtype=float)
    n = int(ref_on.size + ref_off.size)
    if not len(hypothesis) or not n:
        return {"mean_s": None, "median_s": None, f"within_{tolerance_s:g}s": 0.0 if n else None,
                "n_reference_boundaries": n, "n_hypothesis_segments": len(hypothesis)}
    err = np.concatenate([np.abs(ref_on[:, None] - hyp_on[None, :]).min(axis=1),
                          np.abs(ref_off[:, None] - hyp_off[None, :]).min(axis=1)])
    return {"mean_s": float(err.mean()), "median_s": float(np.median(err)),
            f"within_{tolerance_s:g}s": float((err <= tolerance_s).mean()),
            "n_reference_boundaries": n, "n_hypothesis_segments": len(hypothesis)}
