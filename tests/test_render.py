"""Tests for qvad.data.render: speech cuts meet the voicing floor, or fail naming the segment."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import voiced_like


def _segment(tmp_path, x: np.ndarray) -> dict:
    from qvad.audio.io import write_wav

    path = tmp_path / "seg.wav"
    write_wav(path, x)
    return {"seg_id": "s#0", "source_path": str(path), "label": "speech", "seg_start_s": 0.0,
            "seg_end_s": x.size / 16_000}


def test_speech_cut_meets_voicing_floor_even_when_random_tries_miss(tmp_path):
    """A 3 s segment voiced only in 1.00-1.25 s: random tries almost surely miss it, the scan does not."""
    from qvad.data.render import cut_source, voiced_fraction

    x = np.zeros(48_000, np.float32)
    x[16_000:20_000] = voiced_like(0.25, seed=4)
    cut, start_s, frac = cut_source(_segment(tmp_path, x), 3200, np.random.default_rng(0), 0.7)
    assert frac >= 0.7 and voiced_fraction(cut) == frac and 0.9 <= start_s <= 1.25


def test_unvoiced_speech_segment_is_an_error_naming_it(tmp_path):
    from qvad.data.render import VoicingError, cut_source

    with pytest.raises(VoicingError, match="'s#0'"):
        cut_source(_segment(tmp_path, np.zeros(16_000, np.float32)), 3200, np.random.default_rng(0), 0.7)
