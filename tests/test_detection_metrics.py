"""Long-audio scoring through pyannote.metrics, and `qvad predict --rttm` read back by pyannote's loader."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from benchmarks.long_audio import detection_scores
from qvad import SAMPLE_RATE

TRUTH = [(1.0, 3.0), (5.0, 6.0)]


def test_perfect_hypothesis_scores_zero_error():
    m = detection_scores(TRUTH, TRUTH, 10.0)
    for collar in ("0", "0.25"):
        assert m[f"detection_error_rate@{collar}s"] == 0.0
        assert m[f"detection_precision@{collar}s"] == m[f"detection_recall@{collar}s"] == 1.0


def test_collar_forgives_small_boundary_shifts_only():
    late = [(s + 0.1, e + 0.1) for s, e in TRUTH]  # every boundary 100 ms late: inside the +/- 0.125 s collar
    m = detection_scores(TRUTH, late, 10.0)
    assert m["detection_error_rate@0s"] == pytest.approx((0.2 + 0.2) / 3.0, abs=1e-4)  # 0.2 s missed + 0.2 s FA
    assert m["detection_error_rate@0.25s"] == 0.0
    missed = detection_scores(TRUTH, TRUTH[:1], 10.0)
    assert missed["detection_recall@0.25s"] < 1.0 and missed["detection_precision@0.25s"] == 1.0


def test_false_alarm_in_a_gap_counts_against_precision():
    m = detection_scores(TRUTH, [*TRUTH, (8.0, 9.0)], 10.0)
    assert m["detection_error_rate@0s"] == pytest.approx(1.0 / 3.0, abs=1e-4)
    assert m["detection_precision@0s"] == pytest.approx(3.0 / 4.0, abs=1e-4) and m["detection_recall@0s"] == 1.0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_detector import build_model_dir

    return build_model_dir(tmp_path_factory.mktemp("rttm_model"))


def test_predict_rttm_reads_back_with_pyannotes_loader(model_dir: Path, tmp_path: Path):
    from pyannote.database.util import load_rttm

    from qvad.cli import main

    rng = np.random.default_rng(0)
    for name, seconds in (("first", 12.0), ("second", 7.0)):
        sf.write(tmp_path / f"{name}.wav", (0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32),
                 SAMPLE_RATE)
    rttm, rows = tmp_path / "speech.rttm", tmp_path / "rows.jsonl"
    # a low threshold makes every file speech somewhere, whatever the untrained model's scores
    code = main(["predict", str(tmp_path / "first.wav"), str(tmp_path / "second.wav"), "--model-dir", str(model_dir),
                 "--rttm", str(rttm), "--out", str(rows), "--device", "cpu", "--threads", "1", "--no-progress",
                 "--threshold", "0.02", "--neg-threshold", "0.01", "--min-speech-ms", "0"])
    assert code == 0
    written = {Path(r["path"]).stem: [tuple(s[:2]) for s in r["segments"]]
               for r in map(json.loads, rows.read_text().splitlines())}
    loaded = load_rttm(str(rttm))
    assert set(loaded) == {"first", "second"}
    for uri, annotation in loaded.items():
        assert annotation.labels() == ["speech"]
        segments = [(seg.start, seg.end) for seg, _, _ in annotation.itertracks(yield_label=True)]
        assert len(segments) == len(written[uri]) > 0
        for (start, end), (ws, we) in zip(segments, written[uri]):
            assert start == pytest.approx(ws, abs=1e-3) and end == pytest.approx(we, abs=2e-3)
            assert 0.0 <= start < end <= {"first": 12.0, "second": 7.0}[uri] + 1e-3
