"""Tests for qvad.data.signal: exact SNR on the active part, coloured noise, containers, band-limiting."""

from __future__ import annotations

import numpy as np
import pytest

from qvad.data.signal import active_mask, band_limit, colored_noise, in_container, mix_at_snr, power
from tests.helpers import voiced_like


@pytest.mark.parametrize("snr", [-10, -5, 0, 5, 10, 20])
@pytest.mark.parametrize("kind", ["white", "pink", "brown"])
def test_snr_is_exact_on_the_active_part(snr, kind, rng):
    sig = voiced_like(0.4)
    sig[:1600] = 0.0  # a pause: must not count in the signal's power
    mask = active_mask(sig, "speech")
    assert 0.3 < mask.mean() < 0.9
    noise = colored_noise(kind, sig.size, rng)
    mixed = mix_at_snr(sig, noise, snr, mask)
    measured = 10 * np.log10(power(sig, mask) / power(mixed - sig))
    assert measured == pytest.approx(snr, abs=0.1)


def test_colored_noise_slopes(rng):
    spectra = {k: np.abs(np.fft.rfft(colored_noise(k, 1 << 15, rng))) ** 2 for k in ("white", "pink", "brown")}
    f = np.fft.rfftfreq(1 << 15, 1 / 16_000)
    lo, hi = (f > 100) & (f < 200), (f > 3200) & (f < 6400)
    tilt = {k: 10 * np.log10(s[lo].mean() / s[hi].mean()) for k, s in spectra.items()}
    assert abs(tilt["white"]) < 1.5 and 12 < tilt["pink"] < 16 and 27 < tilt["brown"] < 33


def test_container_centres_clip(rng):
    clip = voiced_like(0.2)
    out = in_container(clip, 32_000, -40, rng)
    start = (32_000 - clip.size) // 2
    assert out.size == 32_000
    floor = np.delete(out, np.arange(start, start + clip.size))
    assert 10 * np.log10(power(floor) / power(clip)) == pytest.approx(-40, abs=0.5)


def test_band_limit_removes_out_of_band_energy(rng):
    x = colored_noise("white", 16_000, rng)
    y = band_limit(x, 300, 3400)
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(y.size, 1 / 16_000)
    assert spec[f > 5000].mean() < 1e-3 * spec[(f > 1000) & (f < 2000)].mean()
