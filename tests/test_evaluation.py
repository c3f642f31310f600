"""The evaluate stage's conventions agree with the scorer's."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit

from qvad.analysis import calibration
from qvad.analysis.system_metrics import system_metrics
from qvad.model.loading import load_model_and_processor
from qvad.model.presets.tiny import build_tiny_checkpoint
from qvad.model.scoring import score_ab, score_ab_logits
from tests.helpers import voiced_like


def test_speech_margin_matches_scorer_probability(tmp_path):
    """P(speech) from the two logits via stats equals score_ab's own softmax (column 0 = 'A' = speech)."""
    path = build_tiny_checkpoint(tmp_path / "tiny", seed=3)
    model, processor = load_model_and_processor({"preset": "tiny", "path": str(path)}, "cpu", for_training=False)
    rng = np.random.default_rng(0)
    clips = [voiced_like(0.5, seed=1), rng.uniform(-0.3, 0.3, 8000).astype(np.float32), voiced_like(1.0, seed=2)]
    logits = score_ab_logits(model, processor, clips, None, batch_size=2)
    np.testing.assert_allclose(expit(calibration.speech_margin(logits)), score_ab(model, processor, clips, None, 2),
                               atol=1e-6)


def test_system_metrics_perfect_and_inverted():
    frame = pd.DataFrame({"y": [1, 1, 0, 0] * 5, "group": [f"g{i}" for i in range(20)], "snr_db": 0,
                          "duration_ms": 200, "orig_sr": 16000, "band": "full"})
    good = system_metrics(frame, frame["y"].to_numpy(), n_boot=50, seed=0)
    bad = system_metrics(frame, 1 - frame["y"].to_numpy(), n_boot=50, seed=0)
    assert good["balanced_accuracy"] == 1.0 and bad["balanced_accuracy"] == 0.0
    assert good["by"]["snr_db"]["0"]["n"] == 20
