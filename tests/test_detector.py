"""The Python API of the trained detector (qvad.detector), its decoding and its segments.

A tiny untrained model folder is built in a fixture exactly as train/evaluate lay it out
(models/base, models/adapter, models/detector.json): scores are meaningless, but every
input path, the model-folder contract and the windowing are real.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from qvad import SAMPLE_RATE
from qvad.audio.decode import SILENCE_PEAK, as_mono_16k, decode_file, find_audio
from qvad.audio.io import AudioError, load_audio
from qvad.data.level import normalize
from qvad.data.signal import in_container
from qvad.detector import Detector
from qvad.detector_config import DetectorConfig, DetectorConfigError, check_model_dir, detector_config
from qvad.segments import (SegmentOptions, boundary_errors, frame_probs, frame_scores, rttm_lines, to_frames,
                           window_starts)
from tests.helpers import build_model_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def detector(model_dir: Path) -> Detector:
    import torch

    torch.set_num_threads(1)
    return Detector.from_dir(model_dir, device="cpu", batch_size=8)


def _noise(seconds: float, seed: int = 0, level: float = 0.1) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(int(round(seconds * SAMPLE_RATE)))).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# the model folder contract

def test_config_round_trip_and_defaults() -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw = detector_config(params, temperature=2.5)
    cfg = DetectorConfig.from_dict(raw)
    assert cfg.to_dict() == json.loads(json.dumps(raw))
    assert cfg.container_ms == params["mix"]["container_ms"]
    assert cfg.window_ms == max(params["mix"]["durations_ms"]) and cfg.hop_ms == cfg.window_ms // 2
    assert cfg.prompt == params["prompt"] and cfg.answer_tokens == ("A", "B")


@pytest.mark.parametrize("key", ["prompt", "container_ms", "container_noise_rel_db", "normalize", "answer_tokens",
                                 "temperature", "threshold", "window_ms", "hop_ms", "model"])
def test_missing_key_is_named_with_the_file(tmp_path: Path, key: str) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw = detector_config(params, temperature=1.0)
    del raw[key]
    path = tmp_path / "detector.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(DetectorConfigError, match=rf"{path}: {key}: missing key"):
        DetectorConfig.load(path)


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["prompt"].pop("user"), "prompt.user: missing key"),
    (lambda r: r["normalize"].pop("peak_target"), "normalize.peak_target: missing key"),
    (lambda r: r["normalize"].update(method="loud"), "normalize.method: must be one of"),
    (lambda r: r.update(answer_tokens=["B", "A"]), "answer_tokens: the scorer reads"),
    (lambda r: r.update(temperature=0), "temperature: must be > 0"),
    (lambda r: r.update(threshold=1.5), r"threshold: must be within \[0, 1\]"),
    (lambda r: r.update(container_ms="2000"), "container_ms: expected an integer"),
    (lambda r: r.update(window_ms=True), "window_ms: expected an integer, got a boolean"),
    (lambda r: r["model"].pop("preset"), "model.preset: missing key"),
])
def test_bad_values_are_named(edit, message: str) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw = detector_config(params, temperature=1.0)
    edit(raw)
    with pytest.raises(DetectorConfigError, match=message):
        DetectorConfig.from_dict(raw, "models/detector.json")


def test_model_folder_parts_are_checked(tmp_path: Path) -> None:
    with pytest.raises(DetectorConfigError, match="model folder not found"):
        check_model_dir(tmp_path / "nope")
    (tmp_path / "base").mkdir()
    with pytest.raises(DetectorConfigError, match="no base model"):
        check_model_dir(tmp_path)
    (tmp_path / "base" / "source.json").write_text("{}")
    with pytest.raises(DetectorConfigError, match="no LoRA adapter"):
        check_model_dir(tmp_path)
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(DetectorConfigError, match="detector.json: not found"):
        DetectorConfig.load(check_model_dir(tmp_path)[2])
    (tmp_path / "detector.json").write_text("{not json")
    with pytest.raises(DetectorConfigError, match="not valid JSON"):
        DetectorConfig.load(tmp_path / "detector.json")


# ---------------------------------------------------------------------------------------------
# input preparation reproduces training

def test_prepare_is_container_then_normalise(detector: Detector) -> None:
    clip = _noise(0.3, seed=3)
    cfg = detector.config
    rng = np.random.default_rng([detector.seed, 123, clip.size])
    expected, _ = normalize(in_container(clip, 32000, cfg.container_noise_rel_db, rng), "peak",
                            peak_target=0.9, headroom_db=3.0)
    got = detector.prepare(clip, 123)
    assert got.shape == (32000,) and np.array_equal(got, expected)
    assert np.isclose(np.abs(got).max(), 0.9 * 10 ** (-3 / 20))
    start = (32000 - clip.size) // 2  # centred
    assert np.sqrt(np.mean(got[:start] ** 2)) < 0.02 * np.sqrt(np.mean(got[start:start + clip.size] ** 2))
    assert np.array_equal(detector.prepare(clip, 123), got)  # seeded: deterministic
    long = _noise(2.5, seed=4)
    assert np.array_equal(detector.prepare(long), normalize(long, "peak", peak_target=0.9, headroom_db=3.0)[0])


def test_prepare_matches_the_mix_and_normalize_stages(detector: Detector, tmp_path: Path) -> None:
    """render_clip (mix_snr) then normalize (normalize stage) vs the detector on the same cut.

    The container noise is a different random draw, so the centre agrees to the noise floor
    (-40 dB re the clip RMS) and the surround in level only.
    """
    import qvad.data.render as render

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    src = tmp_path / "src.wav"
    sf.write(src, _noise(3.0, seed=5, level=0.2), SAMPLE_RATE, subtype="FLOAT")
    row = {"label": "nonspeech", "seg_start_s": 0.0, "seg_end_s": 3.0, "source_path": str(src), "duration_ms": 400,
           "band": "full", "snr_db": 5, "noise_type": "pink", "noise_path": "", "clip_seed": 7}
    seen = {}
    original = render.in_container

    def spy(clip, n, rel_db, rng):
        seen["clip"] = clip.copy()
        return original(clip, n, rel_db, rng)

    render.in_container = spy
    try:
        out, _ = render.render_clip(row, params["mix"], params["hygiene"]["min_speech_frac"])
    finally:
        render.in_container = original
    reference, _ = normalize(out, "peak", peak_target=0.9, headroom_db=3.0)
    ours = detector.prepare(seen["clip"])
    n = seen["clip"].size
    start = (ours.size - n) // 2
    assert ours.shape == reference.shape
    assert np.abs(ours[start:start + n] - reference[start:start + n]).max() < 0.05 * np.abs(reference).max()
    ratio = np.sqrt(np.mean(ours[:start] ** 2) / np.mean(reference[:start] ** 2))
    assert 0.9 < ratio < 1.1


def test_layout(detector: Detector) -> None:
    starts, window = detector.layout(16000)
    assert list(starts) == [0] and window == 16000  # fits the container: one clip, as in training
    starts, window = detector.layout(32000)
    assert list(starts) == [0] and window == 32000
    starts, window = detector.layout(40 * SAMPLE_RATE)
    assert window == 16000 and starts[0] == 0 and starts[-1] + window == 40 * SAMPLE_RATE
    assert np.all(np.diff(starts)[:-1] == 8000)
    starts, window = detector.layout(40 * SAMPLE_RATE, window_ms=500, hop_ms=100)
    assert window == 8000 and np.diff(starts)[0] == 1600


# ---------------------------------------------------------------------------------------------
# predict on arrays and files

def test_predict_array_and_file_agree(detector: Detector, tmp_path: Path) -> None:
    x = _noise(0.8, seed=1)
    path = tmp_path / "a.wav"
    sf.write(path, x, SAMPLE_RATE, subtype="FLOAT")
    p = detector.predict(x)
    assert 0.0 <= p <= 1.0
    assert detector.predict(path) == p
    assert detector.predict(str(path)) == p


def test_calibration_uses_the_stored_temperature(detector: Detector) -> None:
    x = detector.prepare(_noise(0.5, seed=2))
    logits = detector.logits([x]).astype(np.float64)
    margin = logits[0, 0] - logits[0, 1]
    assert np.isclose(detector.score_prepared([x])[0], 1 / (1 + np.exp(-margin / detector.config.temperature)))


def test_batching_does_not_change_scores(detector: Detector) -> None:
    clips = [_noise(s, seed=i) for i, s in enumerate((0.2, 0.5, 1.0, 1.7))]
    alone = [detector.predict(c) for c in clips]
    together = detector.score_prepared([detector.prepare(c) for c in clips])
    assert np.allclose(alone, together, atol=1e-5)


def test_any_rate_and_channels_become_16k_mono(detector: Detector, tmp_path: Path) -> None:
    stereo = np.stack([_noise(1.0, 1), _noise(1.0, 2)], axis=1)
    y = as_mono_16k(stereo, 44100)
    assert y.ndim == 1 and y.size == round(16000 / 44100 * stereo.shape[0])
    path = tmp_path / "s.wav"
    sf.write(path, stereo, 44100, subtype="FLOAT")
    assert np.array_equal(decode_file(path).audio, load_audio(path)[0])  # the pipeline's own decoding
    assert detector.predict(stereo, sr=44100) == detector.predict(path)
    pcm = (np.clip(_noise(0.5, 3), -1, 1) * 32767).astype(np.int16)
    assert np.allclose(as_mono_16k(pcm), pcm / 32768.0, atol=1e-6)
    with pytest.raises(AudioError, match="channels, samples"):
        as_mono_16k(stereo.T, 44100)
    with pytest.raises(AudioError, match="non-finite"):
        detector.predict(np.full(1000, np.nan, dtype=np.float32))


def test_digital_silence_is_nonspeech_without_the_model(detector: Detector, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(_inputs):
        raise AssertionError("the model must not run on digital silence")

    monkeypatch.setattr(detector, "logits", boom)
    assert detector.predict(np.zeros(16000, dtype=np.float32)) == 0.0
    assert detector.predict(np.full(16000, SILENCE_PEAK / 2, dtype=np.float32)) == 0.0
    assert detector.decide(0.0) == "nonspeech"


def test_very_short_clip_is_heard(detector: Detector) -> None:
    """10 ms gives Qwen2-Audio zero audio tokens alone; centred in the container it is scored."""
    p = detector.predict(_noise(0.01, seed=9))
    assert 0.0 < p < 1.0


def test_decode_refuses_broken_files(tmp_path: Path) -> None:
    good = tmp_path / "good.wav"
    sf.write(good, _noise(1.0), SAMPLE_RATE)
    data = good.read_bytes()
    cases = {
        "empty.wav": (b"", "empty file"),
        "header.wav": (data[:30], "corrupt/truncated header"),
        "half.wav": (data[: len(data) // 2], "truncated file"),
        "text.wav": (b"not audio at all\n" * 20, "not a format soundfile reads"),
    }
    for name, (content, reason) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(AudioError, match=reason):
            decode_file(tmp_path / name)
    sf.write(tmp_path / "nan.wav", np.full(800, np.nan, dtype=np.float32), SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match="non-finite"):
        decode_file(tmp_path / "nan.wav")
    sf.write(tmp_path / "zero.wav", np.zeros(0, dtype=np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="zero-length"):
        decode_file(tmp_path / "zero.wav")
    with pytest.raises(AudioError, match="too long to decode"):
        decode_file(good, max_seconds=0.5)
    with pytest.raises(AudioError, match="no such file"):
        decode_file(tmp_path / "missing.wav")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8000, dtype=np.float32), 8000)
    assert decode_file(silent).silent and decode_file(silent).duration_s == pytest.approx(1.0)


def test_find_audio_recurses_and_keeps_named_files(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for name in ("a/x.WAV", "a/b/y.flac", "a/b/z.ogg", "a/notes.txt", ".hidden/h.wav", "a/.dot.wav"):
        (tmp_path / name).write_bytes(b"")
    named = tmp_path / "a" / "notes.txt"
    found = find_audio([tmp_path, named])
    assert found == [tmp_path / "a/b/y.flac", tmp_path / "a/b/z.ogg", tmp_path / "a/x.WAV", named]


# ---------------------------------------------------------------------------------------------
# windows and segments

class _LoudnessDetector(Detector):
    """The real windowing and batching, with a scorer that calls loud frames speech."""

    def score_prepared(self, inputs):
        out = []
        for x in inputs:
            frames = np.abs(x[: x.size // 160 * 160].reshape(-1, 160)).mean(axis=1)
            out.append(float((frames > 0.25).sum()) / (self.config.window_ms / 10))
        return np.clip(np.array(out), 0.0, 1.0)


TRUE_SPEECH = [(3.0, 8.0), (12.0, 20.0), (25.5, 27.0), (33.0, 38.0)]


def _alternating(seconds: float = 40.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = _noise(seconds, seed=11, level=0.003)
    for start, end in TRUE_SPEECH:
        on = (t >= start) & (t < end)
        x[on] += 0.4 * np.sin(2 * np.pi * 440 * t[on]).astype(np.float32)
    return x


def test_segments_find_known_boundaries(detector: Detector, tmp_path: Path) -> None:
    fake = _LoudnessDetector(None, None, detector.config, batch_size=4)
    x = _alternating()
    path = tmp_path / "long.wav"
    sf.write(path, x, SAMPLE_RATE, subtype="FLOAT")
    opts = SegmentOptions(window_ms=1000, hop_ms=250)
    segs = fake.segments(path, options=opts)
    assert len(segs) == len(TRUE_SPEECH)
    for (start, end, p), (ts, te) in zip(segs, TRUE_SPEECH):
        assert abs(start - ts) < 0.3 and abs(end - te) < 0.3 and 0.5 <= p <= 1.0
    (res,) = list(fake.iter_files([path], segments=True, options=opts))  # the batched file path
    assert res.segments == segs and res.windows == 157 and res.p_speech == 1.0 and res.decision == "speech"
    errors = boundary_errors(TRUE_SPEECH, segs)
    assert errors["mean_s"] < 0.3 and errors["within_0.5s"] == 1.0
    scores = frame_scores(to_frames(TRUE_SPEECH, 40.0), to_frames(segs, 40.0))
    assert scores["f1"] > 0.95
    merged = fake.segments(x, options=SegmentOptions(window_ms=1000, hop_ms=250, min_silence_ms=4800))
    assert len(merged) == 3 and abs(merged[0][1] - 20.0) < 0.3  # the 4 s gap merges, 5.5 s and 6 s do not
    assert fake.segments(x, options=SegmentOptions(window_ms=1000, hop_ms=250, min_speech_ms=2000)) == \
        [s for s in segs if s[1] - s[0] >= 2.0]


def test_window_helpers() -> None:
    starts = window_starts(10_000, 4000, 3000)
    assert list(starts) == [0, 3000, 6000]
    assert list(window_starts(10_500, 4000, 3000)) == [0, 3000, 6000, 6500]
    assert list(window_starts(3000, 4000, 1000)) == [0]
    p = frame_probs(np.array([0, 3000, 6000]), np.array([0.0, 1.0, 0.5]), 4000, 10_000, frame=1000)
    assert np.allclose(p, [0, 0, 0, 0.5, 1, 1, 0.75, 0.5, 0.5, 0.5])
    assert np.allclose(frame_probs(np.array([0, 3000, 6000]), np.array([0.0, 1.0, 0.5]), 4000, 10_000,
                                   pool="max", frame=1000)[3], 1.0)


def test_rttm_lines() -> None:
    lines = rttm_lines("my file", [(0.5, 1.25, 0.9)])
    assert lines == ["SPEAKER my_file 1 0.500 0.750 <NA> <NA> speech <NA> <NA>"]


def test_boundary_errors_without_hypothesis() -> None:
    out = boundary_errors([(1.0, 2.0)], [])
    assert out["mean_s"] is None and out["within_0.5s"] == 0.0


# ---------------------------------------------------------------------------------------------
# a clean console

def test_loading_shows_no_avoidable_warning(model_dir: Path) -> None:
    import qvad  # noqa: F401  (its import silences bitsandbytes' optional-kernel probe)

    assert logging.getLogger("bitsandbytes.backends.cpu.ops").getEffectiveLevel() >= logging.ERROR
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Detector.from_dir(model_dir, device="cpu")
    shown = [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)]
    assert not any("is_gradient_checkpointing" in m for m in shown), shown


@pytest.mark.slow
def test_default_preset_loads_and_scores(tmp_path: Path) -> None:
    """The params.yaml preset (whisper-tiny on the CPU by default) through from_dir, predict and segments."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    preset = params["model"]["preset"]
    if preset == "qwen2-audio-7b-instruct":
        pytest.skip("the 7B preset needs its hub checkpoint")
    if preset == "whisper-tiny":
        pytest.importorskip("ctranslate2")
    det = Detector.from_dir(build_model_dir(tmp_path, preset), device="cpu", batch_size=4)
    assert det.config.model["preset"] == preset
    assert 0.0 <= det.predict(_noise(0.01, seed=1)) <= 1.0
    segs = det.segments(_noise(5.0, seed=2), options=SegmentOptions(min_speech_ms=0))
    assert all(0.0 <= s < e <= 5.0 for s, e, _ in segs)


def test_audio_position_travels_from_prompt_json_to_the_detector(tmp_path: Path) -> None:
    """A model trained with the question first must be scored and served with the question first."""
    from qvad.model.store import read_prompt

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    chosen = tmp_path / "prompt.json"
    chosen.write_text(json.dumps({**params["prompt"], "audio_position": "after_question", "source": "x"}))
    prompt = read_prompt(chosen)
    assert prompt["audio_position"] == "after_question"
    cfg = DetectorConfig.from_dict(detector_config(params, temperature=1.0, prompt=prompt))
    assert cfg.prompt["audio_position"] == "after_question"

    older = {k: v for k, v in params["prompt"].items() if k != "audio_position"}  # files from before the param
    chosen.write_text(json.dumps(older))
    assert read_prompt(chosen)["audio_position"] == "before_question"
    raw = detector_config(params, temperature=1.0)
    raw["prompt"] = {**raw["prompt"], "audio_position": "sideways"}
    with pytest.raises(DetectorConfigError, match="prompt.audio_position"):
        DetectorConfig.from_dict(raw)
