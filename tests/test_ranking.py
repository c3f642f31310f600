"""ROC-AUC / average precision with group-bootstrap CIs and paired differences, and the curve files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from qvad.analysis.ranking import ranking_metrics, write_curves


def clips(n_groups: int = 12, per_group: int = 10, seed: int = 0):
    """Single-class groups; a good scorer (labels + noise) and a weak one (more noise)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"g{i}" for i in range(n_groups)], per_group)
    y = np.repeat(np.arange(n_groups) % 2, per_group)
    return y, groups, {"model": y + rng.normal(0, 0.5, y.size), "weak": y + rng.normal(0, 2.0, y.size)}


def test_point_estimates_are_sklearns_and_inside_their_intervals():
    y, groups, scores = clips()
    per_system, diffs = ranking_metrics(y, scores, groups, n_boot=200, seed=1)
    for name, s in scores.items():
        m = per_system[name]
        assert m["roc_auc"] == round(roc_auc_score(y, s), 4)
        for metric in ("roc_auc", "average_precision"):
            low, high = m[f"{metric}_ci95"]
            assert low <= m[metric] <= high
    d = diffs["weak"]["roc_auc"]
    assert d["difference"] == pytest.approx(per_system["model"]["roc_auc"] - per_system["weak"]["roc_auc"], abs=2e-4)
    assert d["difference"] > 0 and d["ci95"][0] > 0 and d["p_holm"] >= d["p_value"]


def test_same_scores_differ_by_nothing_and_reruns_agree():
    y, groups, scores = clips()
    twin = {"model": scores["model"], "copy": scores["model"].copy()}
    first = ranking_metrics(y, twin, groups, n_boot=100, seed=3)
    assert first == ranking_metrics(y, twin, groups, n_boot=100, seed=3)
    assert first[1]["copy"]["roc_auc"]["difference"] == 0 and first[1]["copy"]["roc_auc"]["p_value"] == 1.0


def test_bad_scores_name_the_system():
    y, groups, scores = clips()
    with pytest.raises(ValueError, match="weak"):
        ranking_metrics(y, {**scores, "weak": np.full(y.size, np.nan)}, groups, n_boot=10, seed=0)


def test_curve_files_per_system(tmp_path):
    y, _, scores = clips()
    write_curves(y, scores, tmp_path)
    roc = pd.read_csv(tmp_path / "roc" / "model.csv")
    pr = pd.read_csv(tmp_path / "pr" / "weak.csv")
    assert list(roc.columns) == ["fpr", "tpr"] and list(pr.columns) == ["recall", "precision"]
    assert roc.iloc[0].tolist() == [0.0, 0.0] and roc.iloc[-1].tolist() == [1.0, 1.0]
    assert pr["recall"].max() == 1.0 and pr["precision"].between(0, 1).all()
