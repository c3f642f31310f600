"""How often each speed-up ran in one stage process (counters, not assumptions).

The speed-ups count themselves (:func:`qvad.model.accel.counters`: prefix reads, kernel launches,
answer-slot layers, encoder-cache hits and misses); encoder truncation is model core, not a
speed-up, so its one call per batch is counted here by wrapping it. Both functions must be called
in the stage process itself: ``benchmarks.gpu_pipeline.stage`` calls :func:`install` before the
stage runs and :func:`read` after.
"""

from __future__ import annotations

import functools
from typing import Any

_TRUNCATIONS = [0]


def install() -> None:
    """Zero the speed-up counters and count encoder truncations (once per process)."""
    from qvad.model import accel, encoder_truncation

    accel.reset_counters()
    if getattr(encoder_truncation.truncated_frames, "_counted", False):
        return
    stock = encoder_truncation.truncated_frames

    @functools.wraps(stock)
    def counted(*args: Any, **kwargs: Any) -> int:
        _TRUNCATIONS[0] += 1
        return stock(*args, **kwargs)

    counted._counted = True  # type: ignore[attr-defined]
    encoder_truncation.truncated_frames = counted


def read() -> dict[str, int]:
    """Every speed-up counter plus ``encoder_truncations``."""
    from qvad.model import accel

    return {**accel.counters(), "encoder_truncations": _TRUNCATIONS[0]}
