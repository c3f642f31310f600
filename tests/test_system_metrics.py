"""Tests for qvad.analysis.system_metrics: the evaluate stage's metrics of one system."""

from __future__ import annotations

import pandas as pd

from qvad.analysis.system_metrics import system_metrics


def test_system_metrics_perfect_and_inverted():
    frame = pd.DataFrame({"y": [1, 1, 0, 0] * 5, "group": [f"g{i}" for i in range(20)], "snr_db": 0,
                          "duration_ms": 200, "orig_sr": 16000, "band": "full"})
    good = system_metrics(frame, frame["y"].to_numpy(), n_boot=50, seed=0)
    bad = system_metrics(frame, 1 - frame["y"].to_numpy(), n_boot=50, seed=0)
    assert good["balanced_accuracy"] == 1.0 and bad["balanced_accuracy"] == 0.0
    assert good["by"]["snr_db"]["0"]["n"] == 20
