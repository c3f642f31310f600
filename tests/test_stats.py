"""Tests for qvad.analysis.{metrics,bootstrap,paired,calibration}: metrics, group bootstrap, McNemar, temperature scaling, calibration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import special
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from qvad.analysis import bootstrap, calibration, metrics, paired


def _correlated_clips(n_groups_per_class: int = 30, clips_per_group: int = 25, seed: int = 0):
    """Labels, predictions and groups where each group has its own accuracy (clips correlated)."""
    rng = np.random.default_rng(seed)
    n_groups = 2 * n_groups_per_class
    group_acc = np.clip(0.8 + rng.normal(0.0, 0.15, n_groups), 0.05, 0.99)
    groups = np.repeat(np.arange(n_groups), clips_per_group)
    labels = (groups < n_groups_per_class).astype(int)
    correct = rng.random(groups.size) < group_acc[groups]
    preds = np.where(correct, labels, 1 - labels)
    return labels, preds, groups


# --------------------------------------------------------------------------- point metrics


def test_metrics_match_sklearn_with_and_without_weights() -> None:
    labels, preds, _ = _correlated_clips()
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


# --------------------------------------------------------------------------- group bootstrap


def test_stratified_resample_keeps_class_composition() -> None:
    labels, _, groups = _correlated_clips(n_groups_per_class=7, clips_per_group=3)
    group_index, counts = bootstrap.stratified_group_resample(labels, groups, n_boot=500, seed=3)
    assert counts.shape == (500, 14)
    # groups 0..6 are non-speech, 7..13 speech: each stratum is redrawn to its own size
    assert (counts[:, :7].sum(axis=1) == 7).all() and (counts[:, 7:].sum(axis=1) == 7).all()
    weights = counts[:, group_index]
    assert ((weights * labels).sum(axis=1) > 0).all() and ((weights * (1 - labels)).sum(axis=1) > 0).all()


def test_group_bootstrap_is_deterministic_for_a_seed() -> None:
    labels, preds, groups = _correlated_clips()
    first = bootstrap.group_bootstrap_ci(metrics.balanced_accuracy, labels, preds, groups, n_boot=300, seed=7)
    again = bootstrap.group_bootstrap_ci(metrics.balanced_accuracy, labels, preds, groups, n_boot=300, seed=7)
    other = bootstrap.group_bootstrap_ci(metrics.balanced_accuracy, labels, preds, groups, n_boot=300, seed=8)
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)
    assert first.low < first.estimate < first.high and first.n_undefined == 0


def test_group_ci_is_wider_than_clip_ci_when_clips_are_correlated() -> None:
    labels, preds, groups = _correlated_clips()
    by_group = bootstrap.group_bootstrap_ci(metrics.accuracy, labels, preds, groups, n_boot=1000, seed=0)
    by_clip = bootstrap.group_bootstrap_ci(metrics.accuracy, labels, preds, np.arange(labels.size), n_boot=1000, seed=0)
    assert by_group.estimate == by_clip.estimate
    assert (by_group.high - by_group.low) > 1.5 * (by_clip.high - by_clip.low)


def test_group_bootstrap_rejects_bad_alpha() -> None:
    labels, preds, groups = _correlated_clips()
    with pytest.raises(ValueError, match="alpha"):
        bootstrap.group_bootstrap_ci(metrics.accuracy, labels, preds, groups, alpha=1.5)


# --------------------------------------------------------------------------- McNemar


def test_mcnemar_matches_hand_computed_binomial() -> None:
    # b = 7 (A right, B wrong), c = 2, plus 5 concordant clips that must be ignored.
    correct_a = [1] * 7 + [0] * 2 + [1] * 3 + [0] * 2
    correct_b = [0] * 7 + [1] * 2 + [1] * 3 + [0] * 2
    result = paired.mcnemar_exact(correct_a, correct_b)
    # two-sided: 2 * P(X <= 2), X ~ Binomial(9, 1/2) = 2 * (1 + 9 + 36) / 2**9
    assert (result["b"], result["c"], result["statistic"]) == (7, 2, 2)
    assert result["p_value"] == pytest.approx(92 / 512)


def test_mcnemar_without_discordant_pairs_gives_p_one() -> None:
    assert paired.mcnemar_exact([1, 0, 1], [1, 0, 1])["p_value"] == 1.0


# --------------------------------------------------------------------------- calibration


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
    labels, preds, groups = _correlated_clips()
    df = pd.DataFrame({"label": labels, "pred": preds, "group": groups, "snr": groups % 3})
    table = metrics.accuracy_by(df, "snr", group_col="group", n_boot=200, seed=0)
    assert list(table["snr"]) == [0, 1, 2] and table["n"].sum() == labels.size
    assert (table["accuracy_low"] <= table["accuracy"]).all() and (table["accuracy"] <= table["accuracy_high"]).all()
    assert (table["balanced_accuracy_low"] <= table["balanced_accuracy_high"]).all()
