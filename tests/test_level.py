"""Tests for qvad.data.level: peak normalisation keeps the level cues that RMS normalisation removes."""

from __future__ import annotations

import numpy as np
import pytest

from qvad.data.level import normalize
from qvad.data.signal import colored_noise, mix_at_snr, power
from tests.helpers import voiced_like


def test_peak_normalisation_keeps_level_structure_rms_does_not(rng):
    clean = voiced_like(1.0)
    noisy = mix_at_snr(clean, colored_noise("white", clean.size, rng), -5, np.ones(clean.size, bool))
    quiet = 0.1 * clean
    crest = lambda x: np.max(np.abs(x)) / np.sqrt(power(x))  # noqa: E731
    for x in (clean, noisy, quiet):
        y, _ = normalize(x, "peak", peak_target=0.9, headroom_db=3)
        assert np.max(np.abs(y)) == pytest.approx(0.9 * 10 ** (-3 / 20), rel=1e-5)
        assert crest(y) == pytest.approx(crest(x), rel=1e-4)
    # The RMS ratio between a clean and a noisy clip (the SNR cue) survives peak normalisation ...
    pc, pn = (normalize(x, "peak")[0] for x in (clean, noisy))
    ratio = lambda a, b: power(a) / power(b)  # noqa: E731
    assert ratio(pc, pn) == pytest.approx(ratio(clean, noisy) * (np.max(np.abs(noisy)) / np.max(np.abs(clean))) ** 2,
                                          rel=1e-4)
    assert abs(10 * np.log10(ratio(pc, pn))) > 1.0
    # ... while RMS normalisation forces it to 0 dB.
    rc, rn = (normalize(x, "rms")[0] for x in (clean, noisy))
    assert 10 * np.log10(ratio(rc, rn)) == pytest.approx(0.0, abs=0.01)


@pytest.mark.parametrize("method", ["peak", "rms"])
def test_normalising_a_normalised_clip_changes_no_sample(rng, method):
    """qvad predict re-normalises the pipeline's own clips: they must reach the model as evaluate reads them."""
    for x in (voiced_like(1.0), 0.3 * rng.standard_normal(16000).astype(np.float32)):
        once, _ = normalize(x, method)
        sixteen_bit = np.round(once * 32768).astype(np.float32) / 32768  # as a 16-bit file stores it
        for stored in (once, sixteen_bit):
            again, gain_db = normalize(stored, method)
            assert gain_db == 0.0
            assert np.array_equal(again, stored)
