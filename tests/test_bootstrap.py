"""Tests for qvad.analysis.bootstrap: the stratified group bootstrap and its intervals."""

from __future__ import annotations

import numpy as np
import pytest

from qvad.analysis import bootstrap, metrics
from tests.helpers import correlated_clips


def test_stratified_resample_keeps_class_composition() -> None:
    labels, _, groups = correlated_clips(n_groups_per_class=7, clips_per_group=3)
    group_index, counts = bootstrap.stratified_group_resample(labels, groups, n_boot=500, seed=3)
    assert counts.shape == (500, 14)
    # groups 0..6 are non-speech, 7..13 speech: each stratum is redrawn to its own size
    assert (counts[:, :7].sum(axis=1) == 7).all() and (counts[:, 7:].sum(axis=1) == 7).all()
    weights = counts[:, group_index]
    assert ((weights * labels).sum(axis=1) > 0).all() and ((weights * (1 - labels)).sum(axis=1) > 0).all()


def test_group_bootstrap_is_deterministic_for_a_seed() -> None:
    labels, preds, groups = correlated_clips()
    first = bootstrap.group_bootstrap_ci(metrics.balanced_accuracy, labels, preds, groups, n_boot=300, seed=7)
    again = bootstrap.group_bootstrap_ci(metrics.balanced_accuracy, labels, preds, groups, n_boot=300, seed=7)
    other = bootstrap.group_bootstrap_ci(metrics.balanced_accuracy, labels, preds, groups, n_boot=300, seed=8)
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)
    assert first.low < first.estimate < first.high and first.n_undefined == 0


def test_group_ci_is_wider_than_clip_ci_when_clips_are_correlated() -> None:
    labels, preds, groups = correlated_clips()
    by_group = bootstrap.group_bootstrap_ci(metrics.accuracy, labels, preds, groups, n_boot=1000, seed=0)
    by_clip = bootstrap.group_bootstrap_ci(metrics.accuracy, labels, preds, np.arange(labels.size), n_boot=1000, seed=0)
    assert by_group.estimate == by_clip.estimate
    assert (by_group.high - by_group.low) > 1.5 * (by_clip.high - by_clip.low)


def test_group_bootstrap_rejects_bad_alpha() -> None:
    labels, preds, groups = correlated_clips()
    with pytest.raises(ValueError, match="alpha"):
        bootstrap.group_bootstrap_ci(metrics.accuracy, labels, preds, groups, alpha=1.5)
