"""Tests for qvad.analysis.calibration: temperature scaling, ECE, reliability, and the speech margin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import special

from qvad.analysis import calibration
from qvad.model.loading import load_model_and_processor
from qvad.model.scoring import score_ab, score_ab_logits
from tests.helpers import voiced_like


def test_fit_temperature_recovers_known_temperature() -> None:
    rng = np.random.default_rng(0)
    true_margin = rng.normal(0.0, 2.0, 20_000)
    labels = (rng.random(true_margin.size) < special.expit(true_margin)).astype(int)
    overconfident = 2.5 * true_margin  # a model whose logits are 2.5x too large
    assert calibration.fit_temperature(overconfident, labels) == pytest.approx(2.5, rel=0.05)
    two_col = np.column_stack([overconfident, np.zeros_like(overconfident)])  # column 0 = 'A' = speech
    assert calibration.fit_temperature(two_col, labels) == pytest.approx(calibration.fit_temperature(overconfident, labels))
    calibrated = calibration.apply_temperature(overconfident, 2.5)
    np.testing.assert_allclose(calibrated, special.expit(true_margin))


def test_fit_temperature_input_errors() -> None:
    with pytest.raises(ValueError, match="shape"):
        calibration.fit_temperature(np.zeros((4, 3)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="length mismatch"):
        calibration.fit_temperature([0.1, 0.2], [0, 1, 1])


def _calibrated_probs(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    return p, (rng.random(n) < p).astype(int)


def test_ece_small_when_calibrated_and_large_when_overconfident() -> None:
    p, labels = _calibrated_probs()
    overconfident = special.expit(3.0 * special.logit(p))
    calibrated_ece = calibration.expected_calibration_error(p, labels)
    assert calibrated_ece < 0.02
    assert calibration.expected_calibration_error(overconfident, labels) > 0.1 > calibrated_ece


def test_reliability_table_bins_cover_top_label_confidence() -> None:
    p, labels = _calibrated_probs(n=2_000)
    table = calibration.reliability_table(p, labels, n_bins=10)
    assert len(table) == 10 and table["count"].sum() == 2_000
    assert table["bin_lower"].iloc[0] == 0.5 and table["bin_upper"].iloc[-1] == 1.0
    filled = table[table["count"] > 0]
    assert ((filled["confidence"] >= filled["bin_lower"]) & (filled["confidence"] <= filled["bin_upper"])).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration.reliability_table([0.2, 1.3], [0, 1])


def test_confidence_gap() -> None:
    # predictions: 1 (right, conf .9), 0 (right, conf .8), 1 (wrong, conf .6), 0 (wrong, conf .7)
    gap = calibration.confidence_gap([0.9, 0.2, 0.6, 0.3], [1, 0, 0, 1])
    assert gap["mean_conf_correct"] == pytest.approx(0.85)
    assert gap["mean_conf_wrong"] == pytest.approx(0.65)
    assert gap["gap"] == pytest.approx(0.2) and (gap["n_correct"], gap["n_wrong"]) == (2, 2)


def test_speech_margin_matches_scorer_probability(tiny_dir: Path) -> None:
    """P(speech) from the two logits via speech_margin equals score_ab's own softmax (column 0 = 'A' = speech)."""
    model, processor = load_model_and_processor({"preset": "tiny", "path": str(tiny_dir)}, "cpu", for_training=False)
    rng = np.random.default_rng(0)
    clips = [voiced_like(0.5, seed=1), rng.uniform(-0.3, 0.3, 8000).astype(np.float32), voiced_like(1.0, seed=2)]
    logits = score_ab_logits(model, processor, clips, None, batch_size=2)
    np.testing.assert_allclose(special.expit(calibration.speech_margin(logits)),
                               score_ab(model, processor, clips, None, 2), atol=1e-6)
