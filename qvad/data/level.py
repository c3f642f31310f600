"""Level normalisation of finished clips.

Peak normalisation applies one gain per clip, so the clip's internal level structure
(speech over noise, crest factor) survives: a 20 dB clip stays peaky, a -10 dB clip
stays flat. RMS normalisation forces equal energy and erases that cue; it is kept as an
option for comparison.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

METHODS = ("peak", "rms", "none")
UNITY = 2.0**-15
"""A gain this close to 1 (0.00027 dB, one 16-bit step relative to full scale) is not applied.

A clip the pipeline normalised measures at its target level up to the rounding of the file it was
stored in: a float32 ulp (~6e-8) or, in a 16-bit file, half a 16-bit step (up to 2.4e-5 relative
at the default peak). Without this a second normalisation (``qvad predict`` on the pipeline's own
clips) moved every sample by that much; on a GPU in bfloat16, at the same batch shapes and through
the same code paths, predict's answer-logit margins then differed from evaluate's by up to 0.03."""


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
    """``(normalised clip, gain in dB)``; clipped to [-1, 1] only as a last guard for RMS.

    Idempotent: a clip already at the target level (gain within :data:`UNITY` of 1) comes back
    unchanged, bit for bit.
    """
    g = gain_for(x, method, **kwargs)
    if abs(g - 1.0) <= UNITY:
        g = 1.0
    return np.clip(x * g, -1.0, 1.0).astype(np.float32), float(20 * np.log10(g))


def normalize_as(x: np.ndarray, cfg: Mapping[str, Any]) -> tuple[np.ndarray, float]:
    """:func:`normalize` with params.yaml's ``normalize`` section (``method`` and its levels), so the
    stage, the psychometric variants and ``qvad predict`` read one section one way."""
    levels = {k: float(cfg[k]) for k in ("peak_target", "headroom_db", "rms_dbfs") if k in cfg}
    return normalize(x, cfg["method"], **levels)
