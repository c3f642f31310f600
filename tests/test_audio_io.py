"""Bad input is skipped with a reason naming the file; good input decodes to 16 kHz mono."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from qvad.audio.io import AudioError, load_audio
from qvad.data.manifest import RAW_COLUMNS, RawItem, decode_items


def _item(path, i, label="speech"):
    return RawItem(id=f"f{i}", src=str(path), source_path=path.name, label=label, group=f"g{i}",
                   package="test", version="1", licence="CC0")


def test_stereo_44k_becomes_16k_mono(tmp_path):
    t = np.arange(44_100) / 44_100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], axis=1) * 0.5
    sf.write(tmp_path / "s.wav", stereo, 44_100)
    x, sr = load_audio(tmp_path / "s.wav")
    assert sr == 44_100 and x.ndim == 1 and abs(x.size - 16_000) <= 1
    assert np.max(np.abs(x)) == pytest.approx(0.25, rel=0.05)  # channels averaged


@pytest.mark.parametrize("kind, reason", [
    ("empty", "empty file"), ("zero_frames", "zero-length"), ("nan", "non-finite"),
    ("corrupt", "unreadable"), ("silent", "digital silence"), ("truncated", "unreadable"),
])
def test_bad_files_raise_with_path_and_reason(tmp_path, kind, reason):
    path = tmp_path / f"{kind}.wav"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "zero_frames":
        sf.write(path, np.zeros(0, dtype=np.float32), 16_000)
    elif kind == "nan":
        sf.write(path, np.full(1600, np.nan, dtype=np.float32), 16_000, subtype="FLOAT")
    elif kind == "corrupt":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 10)
    elif kind == "silent":
        sf.write(path, np.zeros(1600, dtype=np.float32), 16_000)
    elif kind == "truncated":  # a half-finished download of an Ogg file
        sf.write(tmp_path / "full.ogg", np.random.default_rng(0).uniform(-.5, .5, 48_000), 16_000)
        path = tmp_path / "truncated.ogg"
        path.write_bytes((tmp_path / "full.ogg").read_bytes()[:60])
    with pytest.raises(AudioError) as err:
        load_audio(path)
    assert str(path) in str(err.value) and reason in str(err.value)


def test_decode_items_skips_bad_and_keeps_good(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, np.random.default_rng(1).uniform(-.5, .5, 8000).astype(np.float32), 8000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"")
    manifest, failures = decode_items([_item(good, 0), _item(bad, 1)], tmp_path / "out", max_seconds=60, workers=1)
    assert list(manifest.columns) == RAW_COLUMNS
    assert manifest["id"].tolist() == ["f0"] and manifest["orig_sr"].iloc[0] == 8000
    assert manifest["duration_s"].iloc[0] == pytest.approx(1.0, abs=1e-3)
    assert failures.to_dict("records") == [{"package": "test", "source_path": "bad.wav", "reason": "empty file (0 bytes)"}]
    x, sr = sf.read(manifest["path"].iloc[0])
    assert sr == 16_000 and x.dtype == np.float64 and x.size == 16_000


def test_decode_is_byte_identical_twice(tmp_path):
    src = tmp_path / "a.ogg"
    sf.write(src, np.random.default_rng(2).uniform(-.5, .5, 22_050), 22_050)
    m1, _ = decode_items([_item(src, 0)], tmp_path / "o1", 60, workers=1)
    m2, _ = decode_items([_item(src, 0)], tmp_path / "o2", 60, workers=1)
    assert (tmp_path / "o1/f0.wav").read_bytes() == (tmp_path / "o2/f0.wav").read_bytes()
    assert m1["audio_md5"].equals(m2["audio_md5"])
