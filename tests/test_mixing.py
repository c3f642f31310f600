"""Exact SNR, containers, band-limiting and normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from qvad.data.signal import active_mask, band_limit, colored_noise, in_container, mix_at_snr, power
from qvad.data.level import normalize
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
