"""Level normalisation of finished clips.

Peak normalisation applies one gain per clip, so the clip's internal level structure
(speech over noise, crest factor) survives: a 20 dB clip stays peaky, a -10 dB clip
stays flat. RMS normalisation forces equal energy and erases that cue; it is kept as an
option for comparison.
"""

from __future__ import annotations

import numpy as np

METHODS = ("peak", "rms", "none")


def gain_for(x: np.ndarray, method: str, peak_target: float = 0.9, headroom_db: float = 3.0,
             rms_dbfs: float = -20.0) -> float:
    """The linear gain that ``method`` applies to ``x``."""
    if method == "none":
        return 1.0
    if method == "peak":
        peak = float(np.max(np.abs(x)))
        return peak_target * 10 ** (-headroom_db / 20) / peak if peak > 0 else 1.0
    if method == "rms":
        rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
        return 10 ** (rms_dbfs / 20) / rms if rms > 0 else 1.0
    raise ValueError(f"unknown normalisation {method!r}: expected one of {METHODS}")


def normalize(x: np.ndarray, method: str, **kwargs: float) -> tuple[np.ndarray, float]:
    """``(normalised clip, gain in dB)``; clipped to [-1, 1] only as a last guard for RMS."""
    g = gain_for(x, method, **kwargs)
    return np.clip(x * g, -1.0, 1.0).astype(np.float32), float(20 * np.log10(g))
