"""Clip-level scores and decision rules for the WebRTC, Silero and TEN VAD baselines.

A VAD answers per frame; the question the model answers is per clip. The baselines
therefore reduce frame decisions to a few clip scores, and the threshold that turns
a score into a yes/no answer is chosen on DEV only (``choose_rule``) and then applied
unchanged to TEST (``apply_rule``), so the baselines get the same tuning budget as
the model and no test information leaks into their numbers.

Scores are computed on each clip exactly as given, container and low-level padding
noise included: that is what a user would feed a VAD, and what the model hears. A
fraction-of-frames score is therefore diluted for short clips in a long container;
the dev-chosen threshold accounts for that. Latency is not measured here: it belongs to
benchmarks/latency.py, so that tracked metrics hold only what the same params reproduce.

TEN VAD (Agora) is Apache-2.0 with Agora's additional conditions (no deployment that competes
with Agora's offerings); it is used here only as a comparison.
"""

from __future__ import annotations

from itertools import pairwise
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from qvad.audio.ten_vad import ten_vad_probs
from qvad.audio.vad import silero_probs, webrtc_frames

BASELINES = ("webrtc", "silero", "ten")
SILERO_FRAME_THRESHOLD = 0.5
"""A window counts as speech at probability >= 0.5, the same cut that ``vad.voiced_frames`` uses."""

SILERO_SCORES = ("silero_mean", "silero_max", "silero_frac")
TEN_SCORES = ("ten_mean", "ten_max", "ten_frac")
TEN_FRAME_THRESHOLD = 0.5
"""TEN VAD's own default cut for a voiced hop."""


class DecisionRule(NamedTuple):
    """Predict speech when ``scores[score] >= threshold``; ``_asdict()`` gives a JSON-ready dict."""

    score: str
    threshold: float


def webrtc_score_name(mode: int) -> str:
    """Column name of the WebRTC voiced fraction; the mode is in the name so modes never mix."""
    return f"webrtc{mode}_frac"


def _check_clip(x: np.ndarray, index: int) -> np.ndarray:
    """Reject what a VAD would silently mis-handle (stereo, ints) with the clip's index."""
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"clip {index}: expected a 1-D 16 kHz mono array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"clip {index}: expected float samples in [-1, 1], got dtype {x.dtype}")
    return x


def _fraction(flags: np.ndarray) -> float:
    """Share of True frames; 0 for a clip shorter than one frame (nothing was heard as speech)."""
    return float(flags.mean()) if flags.size else 0.0


def webrtc_scores(clips: Sequence[np.ndarray], mode: int = 3, frame_ms: int = 30) -> pd.DataFrame:
    """One row per clip: the fraction of full ``frame_ms`` frames that WebRTC (``mode``) calls voiced."""
    values = [_fraction(webrtc_frames(_check_clip(x, i), mode, frame_ms)) for i, x in enumerate(clips)]
    return pd.DataFrame({webrtc_score_name(mode): np.asarray(values, dtype=np.float64)})


def _frame_summary(probs: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """Mean, max and >= ``threshold`` share of frame probabilities; all 0 when there is no full frame."""
    if probs.size == 0:
        return 0.0, 0.0, 0.0
    return float(probs.mean()), float(probs.max()), float((probs >= threshold).mean())


def silero_scores(clips: Sequence[np.ndarray]) -> pd.DataFrame:
    """One row per clip with ``silero_mean``, ``silero_max`` and ``silero_frac`` of the 32 ms windows."""
    rows = [_frame_summary(silero_probs(_check_clip(x, i)), SILERO_FRAME_THRESHOLD) for i, x in enumerate(clips)]
    return pd.DataFrame(rows, columns=list(SILERO_SCORES), dtype=np.float64)


def ten_scores(clips: Sequence[np.ndarray]) -> pd.DataFrame:
    """One row per clip with ``ten_mean``, ``ten_max`` and ``ten_frac`` of TEN VAD's 16 ms hops."""
    rows = [_frame_summary(ten_vad_probs(_check_clip(x, i)), TEN_FRAME_THRESHOLD) for i, x in enumerate(clips)]
    return pd.DataFrame(rows, columns=list(TEN_SCORES), dtype=np.float64)


def score_clips(clips: Sequence[np.ndarray], baseline: str, *, mode: int = 3, frame_ms: int = 30) -> pd.DataFrame:
    """Score ``clips`` (16 kHz float, in order) with one baseline; ``mode``/``frame_ms`` are WebRTC's."""
    if len(clips) == 0:
        raise ValueError("score_clips needs at least one clip")
    if baseline == "webrtc":
        return webrtc_scores(clips, mode, frame_ms)
    if baseline == "silero":
        return silero_scores(clips)
    if baseline == "ten":
        return ten_scores(clips)
    raise ValueError(f"unknown baseline {baseline!r}: expected one of {BASELINES}")


def _score_chunk(clips: list, ev: dict) -> dict[str, pd.DataFrame]:
    """Every baseline's clip scores for one chunk of clips (run in a worker process)."""
    return {name: score_clips(clips, name, mode=ev["webrtc_mode"], frame_ms=ev["webrtc_frame_ms"])
            for name in BASELINES}


def baseline_scores(audio: list, ev: dict, n_jobs: int | None, n_chunks: int = 16) -> dict[str, pd.DataFrame]:
    """:func:`score_clips` of every baseline, computed in ``n_jobs`` processes, rows in ``audio`` order.

    The VADs are a third of the psychometric stage and half of evaluate on one core (Silero steps
    one 32 ms window at a time). Each clip is scored alone -- a fresh WebRTC / TEN instance,
    Silero's state reset, Silero on one thread -- so splitting the clips over processes gives the same scores as one loop. The
    workers inherit the pinned CPU kernels through the environment (:func:`pin_cpu_numerics`).
    """
    if len(audio) == 0:
        raise ValueError("baseline_scores needs at least one clip")
    bounds = np.linspace(0, len(audio), min(n_chunks, len(audio)) + 1).astype(int)
    parts = Parallel(n_jobs=n_jobs or -1)(delayed(_score_chunk)(audio[a:b], ev) for a, b in pairwise(bounds))
    return {name: pd.concat([part[name] for part in parts], ignore_index=True) for name in BASELINES}


def _check_labels(scores: pd.DataFrame, labels: Sequence[int] | np.ndarray) -> np.ndarray:
    """Labels as a bool array aligned with ``scores``; both classes are needed for balanced accuracy."""
    y = np.asarray(labels)
    if y.shape != (len(scores),):
        raise ValueError(f"labels: expected {len(scores)} values (one per score row), got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1 or bool (1 = speech)")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise ValueError("labels hold one class only: balanced accuracy on dev is undefined")
    return y


def _best_cut(values: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Best (balanced accuracy, threshold) for ``values >= threshold``, lowest threshold on ties.

    Candidates are the lowest value (everything speech) and the midpoints between
    consecutive distinct values: a midpoint classifies dev exactly like the upper value
    but leaves a margin on both sides for unseen test clips.
    """
    if not np.isfinite(values).all():
        raise ValueError("scores contain NaN or infinity")
    distinct, inverse = np.unique(values, return_inverse=True)
    pos_at = np.bincount(inverse, weights=y, minlength=distinct.size)
    neg_at = np.bincount(inverse, weights=~y, minlength=distinct.size)
    # cut k predicts speech for distinct[k:]; k = 0 is "everything is speech"
    neg_below = np.concatenate(([0.0], np.cumsum(neg_at)[:-1]))
    pos_from = pos_at.sum() - np.concatenate(([0.0], np.cumsum(pos_at)[:-1]))
    bacc = 0.5 * (pos_from / pos_at.sum() + neg_below / neg_at.sum())
    thresholds = np.concatenate((distinct[:1], (distinct[:-1] + distinct[1:]) / 2.0))
    k = int(np.argmax(bacc))  # first maximum = lowest threshold
    return float(bacc[k]), float(thresholds[k])


def choose_rule(dev_scores: pd.DataFrame, labels: Sequence[int] | np.ndarray) -> DecisionRule:
    """Pick the score column and threshold with the highest balanced accuracy on DEV.

    Call it on dev scores only; the returned rule is then applied unchanged to test.
    Balanced accuracy, because the speech share of dev need not be one half. Ties go to the
    alphabetically first score name, then the lowest threshold, so reruns agree.
    """
    if dev_scores.shape[1] == 0 or len(dev_scores) == 0:
        raise ValueError("dev_scores must have at least one score column and one row")
    y = _check_labels(dev_scores, labels)
    candidates = [(*_best_cut(dev_scores[name].to_numpy(dtype=np.float64), y), name)
                  for name in sorted(dev_scores.columns)]
    _, threshold, name = max(candidates, key=lambda c: c[0])  # max keeps the first of equals
    return DecisionRule(score=name, threshold=threshold)


def apply_rule(scores: pd.DataFrame, rule: DecisionRule) -> np.ndarray:
    """Boolean speech prediction per row of ``scores`` under a rule chosen on dev."""
    if rule.score not in scores.columns:
        raise KeyError(f"rule uses score {rule.score!r}, but scores have {list(scores.columns)}")
    return scores[rule.score].to_numpy(dtype=np.float64) >= rule.threshold
