"""Tests for qvad.analysis.metrics: accuracy, balanced accuracy and per-class recall, and breakdowns by level."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from qvad.analysis import metrics
from tests.helpers import correlated_clips


# --------------------------------------------------------------------------- point metrics


def test_metrics_match_sklearn_with_and_without_weights() -> None:
    labels, preds, _ = correlated_clips()
    w = np.random.default_rng(1).random(labels.size)
    assert metrics.accuracy(labels, preds) == pytest.approx(accuracy_score(labels, preds))
    assert metrics.accuracy(labels, preds, w) == pytest.approx(accuracy_score(labels, preds, sample_weight=w))
    assert metrics.balanced_accuracy(labels, preds) == pytest.approx(balanced_accuracy_score(labels, preds))
    assert metrics.balanced_accuracy(labels, preds, w) == pytest.approx(
        balanced_accuracy_score(labels, preds, sample_weight=w)
    )


def test_per_class_recall_values_and_missing_class() -> None:
    recalls = metrics.per_class_recall([1, 1, 1, 0, 0], [1, 1, 0, 0, 1])
    assert recalls == pytest.approx({"speech": 2 / 3, "nonspeech": 1 / 2})
    only_speech = metrics.per_class_recall([1, 1], [1, 0])
    assert only_speech["speech"] == 0.5 and np.isnan(only_speech["nonspeech"])
    with pytest.raises(ValueError, match="both classes"):
        metrics.balanced_accuracy([1, 1], [1, 0])


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [([], [], "empty"), ([0, 2], [0, 1], "only 0 and 1"), ([0, 1, 1], [0, 1], "length mismatch")],
)
def test_metric_input_errors(y_true: list, y_pred: list, message: str) -> None:
    for fn in (metrics.accuracy, metrics.balanced_accuracy, metrics.per_class_recall):
        with pytest.raises(ValueError, match=message):
            fn(y_true, y_pred)


# --------------------------------------------------------------------------- breakdowns


def test_accuracy_by_levels_counts_and_confounded_level() -> None:
    df = pd.DataFrame(
        {
            "sr": [8000, 8000, 8000, 8000, 44100, 44100],
            "label": [1, 1, 0, 0, 0, 0],
            "pred": [1, 0, 0, 0, 0, 1],
            "group": ["a", "b", "c", "d", "e", "f"],
        }
    )
    table = metrics.accuracy_by(df, "sr").set_index("sr")
    assert table.loc[8000, "n"] == 4 and table.loc[8000, "balanced_accuracy"] == pytest.approx(0.75)
    assert table.loc[44100, "accuracy"] == 0.5 and np.isnan(table.loc[44100, "balanced_accuracy"])
    with pytest.raises(ValueError, match="group_col"):
        metrics.accuracy_by(df, "sr", n_boot=10)


def test_accuracy_by_with_group_bootstrap_intervals() -> None:
    labels, preds, groups = correlated_clips()
    df = pd.DataFrame({"label": labels, "pred": preds, "group": groups, "snr": groups % 3})
    table = metrics.accuracy_by(df, "snr", group_col="group", n_boot=200, seed=0)
    assert list(table["snr"]) == [0, 1, 2] and table["n"].sum() == labels.size
    assert (table["accuracy_low"] <= table["accuracy"]).all() and (table["accuracy"] <= table["accuracy_high"]).all()
    assert (table["balanced_accuracy_low"] <= table["balanced_accuracy_high"]).all()
