"""`qvad predict` as a user runs it: a subprocess over real files, good and broken.

One run scores a folder holding every input case (stereo 44.1 kHz, 8 kHz FLAC, a 10 ms clip,
digital silence, a 40 s file, a nested folder, and corrupt, empty, NaN-filled, text-as-WAV,
truncated-header and half-written files): each broken file gets its own error row naming the
problem, the rest are scored, and the exit status says that some failed.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qvad import SAMPLE_RATE

ROOT = Path(__file__).resolve().parents[1]


def _noise(seconds: float, seed: int = 0, level: float = 0.1, channels: int = 1, sr: int = SAMPLE_RATE):
    rng = np.random.default_rng(seed)
    shape = (int(round(seconds * sr)),) + ((channels,) if channels > 1 else ())
    return (level * rng.standard_normal(shape)).astype(np.float32)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audio")
    good = root / "good"
    (good / "nested" / "deeper").mkdir(parents=True)
    sf.write(good / "mono16k.wav", _noise(1.0, 1), SAMPLE_RATE)
    sf.write(good / "stereo44k.wav", _noise(1.5, 2, channels=2, sr=44100), 44100)
    sf.write(good / "nested" / "r8k.flac", _noise(0.7, 3, sr=8000), 8000)
    sf.write(good / "nested" / "deeper" / "clip.ogg", _noise(1.0, 4), SAMPLE_RATE)
    sf.write(good / "tiny10ms.wav", _noise(0.01, 5), SAMPLE_RATE)
    sf.write(good / "silence.wav", np.zeros(SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE)
    (good / "README.txt").write_text("not audio, skipped inside folders\n")
    sf.write(root / "long40s.wav", _noise(40.0, 6, level=0.05), SAMPLE_RATE)
    bad = root / "bad"
    bad.mkdir()
    wav = (good / "mono16k.wav").read_bytes()
    (bad / "empty.wav").write_bytes(b"")
    (bad / "corrupt.wav").write_bytes(b"RIFF" + np.random.default_rng(0).bytes(2000))
    (bad / "text.wav").write_text("this is a text file with a .wav name\n" * 5)
    (bad / "header_cut.wav").write_bytes(wav[:30])
    (bad / "half_written.wav").write_bytes(wav[: len(wav) // 2])
    sf.write(bad / "nan.wav", np.full(SAMPLE_RATE, np.nan, dtype=np.float32), SAMPLE_RATE, subtype="FLOAT")
    return root


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "qvad.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _read_csv(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {Path(r["path"]).name: r for r in csv.DictReader(f)}


EXPECTED_ERRORS = {
    "empty.wav": "empty file (0 bytes)",
    "corrupt.wav": "unreadable audio",
    "text.wav": "not a format soundfile reads",
    "header_cut.wav": "corrupt/truncated header",
    "half_written.wav": "truncated file (half-written?)",
    "nan.wav": "non-finite samples (NaN or Inf)",
    "missing.wav": "no such file",
}


@pytest.mark.slow
def test_predict_every_input_case(model_dir: Path, inputs: Path, tmp_path: Path) -> None:
    out, rttm = tmp_path / "scores.csv", tmp_path / "speech.rttm"
    run = _run(["predict", str(inputs / "good"), str(inputs / "long40s.wav"), str(inputs / "bad"),
                str(inputs / "missing.wav"), "--model-dir", str(model_dir), "--out", str(out), "--segments",
                "--rttm", str(rttm), "--batch-size", "8", "--device", "cpu", "--threads", "1",
                "--min-speech-ms", "0"], tmp_path)
    assert run.returncode == 1, run.stderr
    rows = _read_csv(out)
    assert set(rows) == {"mono16k.wav", "stereo44k.wav", "r8k.flac", "clip.ogg", "tiny10ms.wav", "silence.wav",
                         "long40s.wav", *EXPECTED_ERRORS}  # README.txt in a folder is not audio: skipped
    for name, reason in EXPECTED_ERRORS.items():
        row = rows[name]
        assert reason in row["error"], (name, row["error"])
        assert row["p_speech"] == "" and row["decision"] == ""
        assert f"{name}: " in run.stderr  # named on the console too
    scored = {n: r for n, r in rows.items() if n not in EXPECTED_ERRORS}
    for name, row in scored.items():
        assert row["error"] == "", (name, row["error"])
        assert 0.0 <= float(row["p_speech"]) <= 1.0
        assert row["decision"] == ("speech" if float(row["p_speech"]) >= 0.5 else "nonspeech")
    assert scored["stereo44k.wav"]["orig_sr"] == "44100" and scored["stereo44k.wav"]["channels"] == "2"
    assert float(scored["stereo44k.wav"]["duration_s"]) == pytest.approx(1.5, abs=1e-3)
    assert scored["r8k.flac"]["orig_sr"] == "8000" and float(scored["r8k.flac"]["duration_s"]) == pytest.approx(0.7)
    assert float(scored["tiny10ms.wav"]["duration_s"]) == pytest.approx(0.01) and scored["tiny10ms.wav"]["windows"] == "1"
    assert float(scored["silence.wav"]["p_speech"]) == 0.0 and scored["silence.wav"]["decision"] == "nonspeech"
    assert json.loads(scored["silence.wav"]["segments"]) == []
    long = scored["long40s.wav"]
    assert float(long["duration_s"]) == pytest.approx(40.0) and int(long["windows"]) > 40
    segments = json.loads(long["segments"])
    assert int(long["n_segments"]) == len(segments)
    assert all(0.0 <= s < e <= 40.0 for s, e, _ in segments)
    lines = rttm.read_text().splitlines()
    expected = sum(int(r["n_segments"]) for r in scored.values())
    assert len(lines) == expected
    assert all(line.startswith("SPEAKER ") and line.split()[7] == "speech" for line in lines)
    assert f"{len(EXPECTED_ERRORS)} of 14 files failed" in run.stderr
    noise = [line for line in run.stderr.splitlines()
             if "warn" in line.lower() or "Loading weights" in line or "%|" in line]
    assert noise == [], noise  # no library warnings or progress bars, and no bar when stderr is no terminal


@pytest.mark.slow
def test_predict_all_good_jsonl_exit_zero(model_dir: Path, inputs: Path, tmp_path: Path) -> None:
    out, seg_out = tmp_path / "scores.jsonl", tmp_path / "segments.csv"
    run = _run(["predict", str(inputs / "good" / "mono16k.wav"), str(inputs / "good" / "silence.wav"),
                "--model-dir", str(model_dir), "--out", str(out), "--segments-out", str(seg_out), "--device", "cpu",
                "--threads", "1", "--progress"], tmp_path)
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [Path(r["path"]).name for r in rows] == ["mono16k.wav", "silence.wav"]
    assert rows[1]["p_speech"] == 0.0 and rows[1]["segments"] == [] and rows[0]["error"] == ""
    with open(seg_out, newline="") as f:
        segs = list(csv.DictReader(f))
    assert len(segs) == rows[0]["n_segments"]
    assert "qvad predict: 100%" in run.stderr and "2/2" in run.stderr  # the progress bar, when asked for


# In-process runs of the same entry point (the model loads in a second, not a new interpreter).

def test_stdout_csv_and_too_long(model_dir: Path, inputs: Path, capsys: pytest.CaptureFixture) -> None:
    from qvad.cli import main

    code = main(["predict", str(inputs / "long40s.wav"), str(inputs / "good" / "mono16k.wav"), "--model-dir",
                 str(model_dir), "--max-duration", "30", "--device", "cpu", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    rows = list(csv.DictReader(captured.out.splitlines()))
    assert [Path(r["path"]).name for r in rows] == ["long40s.wav", "mono16k.wav"]
    assert "too long to decode: 40.0 s > the limit of 30 s" in rows[0]["error"] and rows[1]["error"] == ""


def test_bad_model_folder_is_a_usage_error(model_dir: Path, inputs: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    import shutil

    from qvad.cli import main

    broken = tmp_path / "models"
    shutil.copytree(model_dir, broken)
    raw = json.loads((broken / "detector.json").read_text())
    del raw["container_ms"]
    (broken / "detector.json").write_text(json.dumps(raw))
    code = main(["predict", str(inputs / "good"), "--model-dir", str(broken), "--device", "cpu"])
    assert code == 2
    assert f"{broken / 'detector.json'}: container_ms: missing key" in capsys.readouterr().err


def test_bad_options_are_usage_errors(model_dir: Path, inputs: Path, capsys: pytest.CaptureFixture) -> None:
    from qvad.cli import main

    assert main(["predict", str(inputs / "good"), "--model-dir", str(model_dir), "--out", "x.parquet"]) == 2
    assert "must end in .csv or .jsonl" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(inputs / "good"), "--batch-size", "0"])
    assert exc.value.code == 2


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_is_a_clear_error(model_dir: Path, inputs: Path, capsys: pytest.CaptureFixture) -> None:
    from qvad.cli import main

    assert main(["predict", str(inputs / "good"), "--model-dir", str(model_dir), "--device", "cuda"]) == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err


def test_empty_folder_fails(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from qvad.cli import main

    (tmp_path / "nothing").mkdir()
    assert main(["predict", str(tmp_path / "nothing"), "--model-dir", str(model_dir), "--device", "cpu"]) == 1
    assert "no audio files found" in capsys.readouterr().err


def test_console_script_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["qvad"] == "qvad.cli:main"
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}
    from qvad.cli import main

    assert callable(main)
    script = Path(sys.executable).with_name("qvad")
    if script.exists():  # installed (scripts/setup.sh: pip install -e .)
        run = subprocess.run([str(script), "predict", "--help"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and "--segments" in run.stdout
