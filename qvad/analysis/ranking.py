"""Threshold-free clip metrics: ROC-AUC and average precision, with group-bootstrap CIs.

Balanced accuracy scores one operating point (the model's argmax, a baseline's dev-chosen cut).
Silero publishes ROC-AUC on short chunks and TEN VAD precision-recall curves: these need a clip
score, not a decision. The model's score is its dev-calibrated P(speech) (temperature scaling
is monotone, so its AUC is the raw margin's); a baseline's is the clip score its dev rule
thresholds (e.g. ``silero_max``), so each system is ranked by what it decides on.

Intervals use the same class-stratified group resamples as balanced accuracy (same ``n_boot``
and seed, :func:`qvad.analysis.bootstrap.stratified_group_resample`): each system is scored once
per resample, and the model-minus-baseline differences come from the same draws (paired).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from qvad.analysis.bootstrap import stratified_group_resample
from qvad.analysis.paired import holm, summarize_difference
from qvad.common.atomic import write_csv

METRICS: dict[str, Callable[..., float]] = {"roc_auc": roc_auc_score, "average_precision": average_precision_score}
"""Speech is the positive class of both; average precision is sklearn's step-wise area (no interpolation)."""


def _check(y: np.ndarray, scores: dict[str, np.ndarray]) -> None:
    """Both classes and finite scores of the right length, naming the system that has none."""
    if y.min() == y.max():
        raise ValueError("ranking metrics need both classes among the test labels")
    for name, s in scores.items():
        if s.shape != y.shape or not np.isfinite(s).all():
            raise ValueError(f"{name}: expected {len(y)} finite clip scores, got shape {s.shape}")


def ranking_metrics(y: np.ndarray, scores: dict[str, np.ndarray], groups: np.ndarray, n_boot: int,
                    seed: int, reference: str = "model", alpha: float = 0.05) -> tuple[dict, dict]:
    """(per system: each metric with its CI; per other system: ``reference`` minus it, per metric).

    The differences are paired (one resample scores both systems) and Holm-adjusted within
    each metric's family of comparisons, as the balanced-accuracy differences are.
    """
    y = np.asarray(y).astype(int)
    scores = {name: np.asarray(s, dtype=np.float64) for name, s in scores.items()}
    _check(y, scores)
    group_index, counts = stratified_group_resample(y, groups, n_boot, seed)
    weights = [row[group_index].astype(float) for row in counts]
    per_system: dict[str, dict] = {name: {} for name in scores}
    diffs: dict[str, dict] = {name: {} for name in scores if name != reference}
    for metric, fn in METRICS.items():
        point = {name: float(fn(y, s)) for name, s in scores.items()}
        boot = {name: np.array([fn(y, s, sample_weight=w) for w in weights]) for name, s in scores.items()}
        for name in scores:
            low, high = np.quantile(boot[name], [alpha / 2, 1 - alpha / 2])
            per_system[name][metric] = round(point[name], 4)
            per_system[name][f"{metric}_ci95"] = [round(float(low), 4), round(float(high), 4)]
        family = {name: summarize_difference(point[reference] - point[name], boot[reference] - boot[name], alpha)
                  for name in diffs}
        adjusted = holm({name: res["p_value"] for name, res in family.items()})
        for name, res in family.items():
            diffs[name][metric] = {"difference": round(res["difference"], 4), "ci95": [round(v, 4) for v in res["ci95"]],
                                   "p_value": round(res["p_value"], 4), "p_holm": round(adjusted[name], 4),
                                   "n_boot": res["n_boot"]}
    return per_system, diffs


def add_ranking_metrics(metrics: dict, y: np.ndarray, scores: dict[str, np.ndarray], score_names: dict[str, str],
                        groups: np.ndarray, n_boot: int, seed: int) -> None:
    """Add the ranking figures to evaluate's ``metrics`` dict (new keys only, nothing it has changes)."""
    per_system, diffs = ranking_metrics(y, scores, groups, n_boot, seed)
    for name, values in per_system.items():
        metrics["systems"][name].update(values, ranked_by=score_names[name])
    for name, values in diffs.items():
        metrics["model_minus_baseline"][name].update(values)


def write_curves(y: np.ndarray, scores: dict[str, np.ndarray], out_dir: str | Path) -> None:
    """ROC (fpr, tpr) and precision-recall (recall, precision) points per system, for `dvc plots`.

    One file per system and curve (``roc/<system>.csv``, ``pr/<system>.csv``): the curves have
    different lengths. Collinear points are dropped (sklearn's ``drop_intermediate``).
    """
    out = Path(out_dir)
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=True)
        write_csv(out / "roc" / f"{name}.csv", pd.DataFrame({"fpr": fpr, "tpr": tpr}))
        precision, recall, _ = precision_recall_curve(y, s, drop_intermediate=True)
        write_csv(out / "pr" / f"{name}.csv", pd.DataFrame({"recall": recall, "precision": precision}))
