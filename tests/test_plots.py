"""PNG writers (qvad.analysis.plots): a picture is written, and the same data give the same bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

from qvad.analysis import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SYSTEMS = ("qwen2-audio", "silero", "webrtc3")


def clip_results() -> pd.DataFrame:
    """Per-clip correctness for three systems over a small duration x SNR grid."""
    rng = np.random.default_rng(0)
    rows = [(s, d, snr, bool(rng.random() < 0.55 + 0.02 * snr))
            for s in SYSTEMS for d in (200, 600, 1000) for snr in (-5, 0, 10, 20) for _ in range(6)]
    return pd.DataFrame(rows, columns=["system", "duration_ms", "snr_db", "correct"])


def calibration_frame() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    label = rng.random(200) < 0.5
    raw = np.clip(np.where(label, 0.8, 0.3) + 0.2 * rng.standard_normal(200), 0.0, 1.0)
    return pd.DataFrame({"label": label, "prob_raw": raw, "prob_calibrated": 0.5 + 0.6 * (raw - 0.5)})


def write_confusion(path: Path) -> None:
    frame = calibration_frame()
    plots.confusion_matrix_png(pd.DataFrame({"label": frame["label"], "pred": frame["prob_raw"] > 0.5}),
                               path, title="test")


def write_accuracy(path: Path) -> None:
    plots.accuracy_vs_snr_png(clip_results(), path)


def write_reliability(path: Path) -> None:
    plots.reliability_png(calibration_frame(), path, n_bins=8, temperature=1.6)


def write_psychometric(path: Path) -> None:
    points = clip_results().groupby(["system", "duration_ms"], sort=False)["correct"].agg(
        k="sum", n="size").reset_index()
    grid = np.geomspace(200, 1000, 20)
    curves = pd.concat(pd.DataFrame({"system": s, "duration_ms": grid, "p": 0.7, "p_low": 0.6, "p_high": 0.8})
                       for s in SYSTEMS)
    thresholds = pd.DataFrame({"system": list(SYSTEMS), "target": 0.75, "threshold": [300.0, 500.0, np.nan],
                               "ci_low": [250.0, np.nan, np.nan], "ci_high": [350.0, 650.0, np.nan]})
    plots.psychometric_png(points, curves, thresholds, path, x="duration_ms")


WRITERS: dict[str, Callable[[Path], None]] = {
    "confusion": write_confusion,
    "accuracy_vs_snr": write_accuracy,
    "reliability": write_reliability,
    "psychometric": write_psychometric,
}


@pytest.mark.parametrize("name", WRITERS)
def test_writer_makes_png_with_identical_bytes_twice(name: str, tmp_path: Path) -> None:
    first, second = tmp_path / "a" / f"{name}.png", tmp_path / "b" / f"{name}.png"
    WRITERS[name](first)
    WRITERS[name](second)
    data = first.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5_000
    assert data == second.read_bytes()
    assert b"Software" not in data and b"matplotlib" not in data
    assert sorted(p.name for p in first.parent.iterdir()) == [f"{name}.png"]  # no temp file left


def test_missing_columns_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"missing columns \['correct'\]"):
        plots.accuracy_vs_snr_png(clip_results().drop(columns="correct"), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_psychometric_rejects_unknown_axis(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="x must be one of"):
        plots.psychometric_png(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), tmp_path / "x.png", x="level")


def test_wilson_interval_brackets_the_rate_and_stays_in_unit_range() -> None:
    low, high = plots.wilson_interval(np.array([0, 5, 10]), np.array([10, 10, 10]))
    assert (low >= 0).all() and (high <= 1).all()
    rate = np.array([0.0, 0.5, 1.0])
    assert (low <= rate + 1e-12).all() and (rate - 1e-12 <= high).all()
    assert high[0] > 0 and low[2] < 1  # not zero-width at 0 % and 100 %


def test_wilson_interval_holds_the_rate_exactly_at_0_and_100_percent(tmp_path: Path) -> None:
    """Rounding put the bound on the wrong side of k/n (k = 0 of 3, 10 of 10...), and the
    psychometric plot's error bars then raised 'yerr must not contain negative values'."""
    n = np.arange(1, 200, dtype=np.float64)
    for k in (np.zeros_like(n), n):
        low, high = plots.wilson_interval(k, n)
        assert (low <= k / n).all() and (k / n <= high).all()
    points = pd.DataFrame({"system": "model", "duration_ms": [10.0, 20.0], "k": [0.0, 10.0], "n": [3.0, 10.0]})
    curves = pd.DataFrame({"system": "model", "duration_ms": [10.0, 20.0], "p": [0.5, 0.9]})
    thresholds = pd.DataFrame({"system": ["model"], "target": [0.75], "threshold": [np.nan], "ci_low": [np.nan],
                               "ci_high": [np.nan]})
    plots.psychometric_png(points, curves, thresholds, tmp_path / "p.png", x="duration_ms")
    assert (tmp_path / "p.png").stat().st_size > 0
