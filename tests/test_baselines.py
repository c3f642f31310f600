"""Baseline scoring and dev-only decision rules (qvad.analysis.baselines)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from scipy.signal import lfilter

from qvad import SAMPLE_RATE
from qvad.analysis.baselines import (
    SILERO_SCORES,
    TEN_SCORES,
    DecisionRule,
    apply_rule,
    choose_rule,
    score_clips,
    silero_scores,
    webrtc_score_name,
)

VOWEL_FORMANTS = ((730, 1090, 2440), (270, 2290, 3010), (530, 1840, 2480), (300, 870, 2240))


def voiced_like(seconds: float = 1.5, syllable_s: float = 0.25) -> np.ndarray:
    """A deterministic voiced-speech stand-in: a glottal pulse train with moving pitch, shaped
    by vowel formant resonators that change every syllable, with a syllabic envelope.

    Not speech, but it has the harmonic, formant and 4 Hz modulation structure a VAD keys on,
    and needs no TTS engine on the test machine.
    """
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f0 = 110 + 25 * np.sin(2 * np.pi * 1.3 * t)
    pulses = np.diff(np.floor(np.cumsum(f0) / SAMPLE_RATE), prepend=0.0)
    source = lfilter([1.0], [1.0, -0.97], pulses)
    out = np.zeros(n)
    step = int(syllable_s * SAMPLE_RATE)
    for k, start in enumerate(range(0, n, step)):
        seg = source[start:start + step]
        for f in VOWEL_FORMANTS[k % len(VOWEL_FORMANTS)]:
            r, theta = np.exp(-np.pi * (60 + 0.05 * f) / SAMPLE_RATE), 2 * np.pi * f / SAMPLE_RATE
            seg = lfilter([1 - r], [1.0, -2 * r * np.cos(theta), r * r], seg)
        out[start:start + seg.size] = seg * np.hanning(seg.size)
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def white_noise(n: int, level: float = 0.1) -> np.ndarray:
    return (level * np.random.default_rng(1).standard_normal(n)).astype(np.float32)


def test_rule_chosen_on_dev_is_applied_unchanged_to_test() -> None:
    dev = pd.DataFrame({"good": [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], "bad": [0.5, 0.1, 0.9, 0.2, 0.8, 0.3]})
    dev_labels = [0, 0, 0, 1, 1, 1]
    rule = choose_rule(dev, dev_labels)
    assert rule == DecisionRule("good", 0.5)  # midpoint between the classes on dev

    # on test the classes sit lower: a rule re-tuned on test would move, the dev rule must not
    test = pd.DataFrame({"good": [0.05, 0.15, 0.35, 0.45, 0.55, 0.65], "bad": np.zeros(6)})
    test_labels = np.array([0, 0, 1, 1, 1, 1])
    assert choose_rule(test, test_labels) != rule
    predicted = apply_rule(test, rule)
    np.testing.assert_array_equal(predicted, [False, False, False, False, True, True])


def test_rule_ties_are_broken_by_name_then_lowest_threshold() -> None:
    values = [0.1, 0.2, 0.8, 0.9]
    labels = [0, 0, 1, 1]
    forward = choose_rule(pd.DataFrame({"b": values, "a": values}), labels)
    backward = choose_rule(pd.DataFrame({"a": values, "b": values}), labels)
    assert forward == backward == DecisionRule("a", 0.5)
    # a constant score separates nothing: the only candidate is "everything is speech"
    assert choose_rule(pd.DataFrame({"flat": [0.3] * 4}), labels) == DecisionRule("flat", 0.3)


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0, 0], [0, 2, 1]])
def test_choose_rule_rejects_unusable_labels(labels: list[int]) -> None:
    with pytest.raises(ValueError):
        choose_rule(pd.DataFrame({"s": [0.1, 0.5, 0.9]}), labels)


def test_apply_rule_names_a_missing_score() -> None:
    with pytest.raises(KeyError, match="silero_mean"):
        apply_rule(pd.DataFrame({"webrtc3_frac": [0.5]}), DecisionRule("silero_mean", 0.2))


@pytest.mark.slow
def test_silero_scores_voiced_signal_above_white_noise() -> None:
    voiced = voiced_like()
    scores = score_clips([voiced, white_noise(voiced.size)], "silero")
    assert list(scores.columns) == list(SILERO_SCORES)
    speech, noise = scores.iloc[0], scores.iloc[1]
    for name in SILERO_SCORES:
        assert speech[name] > noise[name], name
    assert speech["silero_mean"] > noise["silero_mean"] + 0.2


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_silero_scores_espeak_speech_high(tmp_path) -> None:
    from qvad.audio.io import load_audio

    wav = tmp_path / "tts.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "Is there human speech in this clip?"], check=True)
    speech, _ = load_audio(wav)
    scores = silero_scores([speech]).iloc[0]
    assert scores["silero_max"] > 0.9
    assert scores["silero_frac"] > 0.5


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_ten_scores_speech_above_silence_and_noise(tmp_path) -> None:
    from qvad.audio.io import load_audio

    wav = tmp_path / "tts.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "Is there human speech in this clip?"], check=True)
    speech, _ = load_audio(wav)
    scores = score_clips([speech, np.zeros(SAMPLE_RATE, np.float32), white_noise(SAMPLE_RATE)], "ten")
    assert list(scores.columns) == list(TEN_SCORES)
    assert scores["ten_max"].iloc[0] > 0.9
    assert scores["ten_mean"].iloc[0] > scores["ten_mean"].iloc[1:].max() + 0.2


@pytest.mark.parametrize(("baseline", "frame"), [("webrtc", 480), ("silero", 512)])
def test_clips_shorter_than_a_frame_score_zero(baseline: str, frame: int) -> None:
    clips = [np.zeros(0, np.float32), np.full(100, 0.3, np.float32), white_noise(frame - 1)]
    scores = score_clips(clips, baseline)
    assert scores.shape[0] == len(clips)
    assert (scores.to_numpy() == 0.0).all()


def test_webrtc_column_carries_the_mode() -> None:
    scores = score_clips([white_noise(SAMPLE_RATE)], "webrtc", mode=1)
    assert list(scores.columns) == [webrtc_score_name(1)] == ["webrtc1_frac"]


def test_score_clips_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown baseline"):
        score_clips([white_noise(SAMPLE_RATE)], "energy")
    with pytest.raises(ValueError, match="at least one clip"):
        score_clips([], "webrtc")
    with pytest.raises(ValueError, match="clip 0"):
        score_clips([np.zeros((SAMPLE_RATE, 2), np.float32)], "webrtc")


@pytest.mark.slow
def test_baseline_scores_in_worker_processes_equal_one_loop() -> None:
    # evaluate and psychometric score their clips in chunks over processes; every VAD scores each clip
    # from a fresh state, so the chunked scores must be exactly the in-process ones, in order.
    from qvad.analysis.baselines import BASELINES
    from qvad.analysis.baselines import baseline_scores

    clips = [voiced_like(0.7).astype(np.float32), white_noise(SAMPLE_RATE // 2), np.zeros(300, np.float32),
             voiced_like(1.0).astype(np.float32), white_noise(SAMPLE_RATE, level=0.01)]
    got = baseline_scores(clips, {"webrtc_mode": 3, "webrtc_frame_ms": 30}, n_jobs=2, n_chunks=3)
    for name in BASELINES:
        pd.testing.assert_frame_equal(got[name], score_clips(clips, name, mode=3, frame_ms=30))
