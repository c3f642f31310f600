"""Tests for qvad.data.voiced_regions: speech regions are densely voiced stretches, trimmed to voiced frames."""

from __future__ import annotations

import numpy as np

from qvad.data.voiced_regions import speech_regions, voiced_runs


def test_voiced_runs():
    v = np.array([0, 1, 1, 0, 0, 1, 0, 1], dtype=bool)
    assert voiced_runs(v) == [(1, 3), (5, 6), (7, 8)]


def test_regions_bridge_short_pauses_and_trim_silence():
    v = np.array([0] * 5 + [1] * 8 + [0] * 2 + [1] * 6 + [0] * 30 + [1] * 3 + [0] * 5, dtype=bool)
    regions = speech_regions(v, min_frac=0.7, min_frames=5)
    assert regions == [(5, 21, 14 / 16)]  # pause of 2 bridged; long gap splits; 3-frame run too short


def test_regions_keep_fraction_above_threshold():
    rng = np.random.default_rng(0)
    v = rng.random(2000) < 0.6
    for s, e, frac in speech_regions(v, min_frac=0.7, min_frames=1):
        assert v[s] and v[e - 1] and frac >= 0.7 and v[s:e].mean() == frac
