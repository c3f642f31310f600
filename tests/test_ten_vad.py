"""TEN VAD wrapper (qvad.audio.ten_vad): speech high, silence and noise low, no state carry-over."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("ten_vad")

from qvad.audio import ten_vad as audio_ten_vad
from qvad.audio.ten_vad import TenVadUnavailable, ten_vad_probs, ten_vad_voiced

SR = 16_000

try:
    audio_ten_vad._check_library()
    LIBRARY_OK = True
except TenVadUnavailable:
    LIBRARY_OK = False
needs_library = pytest.mark.skipif(not LIBRARY_OK, reason="libten_vad.so cannot load (libc++1?)")


def white_noise(n: int, level: float = 0.1, seed: int = 1) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """About 3 s of espeak-ng speech at 16 kHz (espeak writes 22,050 Hz)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    import soundfile as sf
    from scipy.signal import resample_poly

    wav = tmp_path_factory.mktemp("tts") / "tts.wav"
    text = "Is there human speech in this clip? The quick brown fox jumps over the lazy dog."
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True)
    x, sr = sf.read(wav, dtype="float32")
    return resample_poly(x, SR, sr).astype(np.float32) if sr != SR else x


@needs_library
def test_speech_scores_high(speech) -> None:
    p = ten_vad_probs(speech)
    assert p.dtype == np.float32 and p.shape == (speech.size // 256,)
    assert p.max() > 0.9
    assert np.mean(p >= 0.5) > 0.5


@needs_library
@pytest.mark.parametrize("hop", [160, 256])
def test_silence_and_white_noise_score_low(hop: int) -> None:
    silence = ten_vad_probs(np.zeros(SR, np.float32), hop)
    assert silence.max() < 0.35 and silence.mean() < 0.3
    for level in (0.01, 0.1, 0.3):
        noise = ten_vad_probs(white_noise(SR, level), hop)
        assert noise.max() < 0.75, level  # measured about 0.5 to 0.58 at onset
        assert noise.mean() < 0.35, level  # measured 0.2 to 0.27


@needs_library
def test_deterministic(speech) -> None:
    np.testing.assert_array_equal(ten_vad_probs(speech), ten_vad_probs(speech))


@needs_library
def test_no_state_carry_over_between_clips(speech) -> None:
    alone = ten_vad_probs(speech)
    ten_vad_probs(white_noise(2 * SR))  # a different clip scored in between
    np.testing.assert_array_equal(ten_vad_probs(speech), alone)
    # a clip in a context does differ: the model is recurrent, so a fresh instance per clip matters
    lead = 62 * 256  # about 1 s of noise, a whole number of hops so the frames line up
    in_context = ten_vad_probs(np.concatenate([white_noise(lead), speech]))[62:]
    assert in_context.shape == alone.shape
    assert np.abs(in_context - alone).max() > 0.01  # measured 0.2 to 0.39


@needs_library
def test_short_and_empty_clips() -> None:
    assert ten_vad_probs(np.zeros(0, np.float32)).shape == (0,)
    short = ten_vad_probs(white_noise(100))
    assert short.shape == (1,) and 0.0 <= short[0] <= 1.0
    assert ten_vad_probs(white_noise(255)).shape == (1,)
    assert ten_vad_probs(white_noise(257)).shape == (1,)  # trailing partial hop dropped
    assert ten_vad_probs(white_noise(1000), hop_size=160).shape == (6,)


@needs_library
def test_threshold_only_changes_flags(speech) -> None:
    np.testing.assert_array_equal(ten_vad_probs(speech, threshold=0.2),
                                  ten_vad_probs(speech, threshold=0.8))
    np.testing.assert_array_equal(ten_vad_voiced(speech, threshold=0.8),
                                  ten_vad_probs(speech) >= 0.8)


@needs_library
def test_matches_the_wheels_own_frame_loop(speech) -> None:
    from ten_vad import TenVad

    vad = TenVad(256, 0.5)
    pcm = (np.clip(speech, -1, 1) * 32767).astype(np.int16)
    ref = [vad.process(pcm[i * 256:(i + 1) * 256])[0] for i in range(pcm.size // 256)]
    np.testing.assert_array_equal(ten_vad_probs(speech), np.asarray(ref, np.float32))


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        ten_vad_probs(np.zeros((2, 400), np.float32))
    with pytest.raises(ValueError):
        ten_vad_probs(np.zeros(400, np.int16))
    with pytest.raises(ValueError):
        ten_vad_probs(np.zeros(400, np.float32), hop_size=100)
    with pytest.raises(ValueError):
        ten_vad_probs(np.full(400, np.nan, np.float32))


def test_missing_cpp_runtime_names_the_debian_packages(monkeypatch) -> None:
    def fail(path, *args, **kwargs):
        raise OSError("libc++.so.1: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(audio_ten_vad.ctypes, "CDLL", fail)
    monkeypatch.setattr(audio_ten_vad, "_library_path", lambda: __file__)  # any existing path
    audio_ten_vad._check_library.cache_clear()
    try:
        with pytest.raises(TenVadUnavailable, match="libc\\+\\+1 and libc\\+\\+abi1"):
            ten_vad_probs(np.zeros(SR, np.float32))
    finally:
        audio_ten_vad._check_library.cache_clear()
