"""Per-system test metrics with group-bootstrap uncertainty, shared by evaluate and its tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from qvad.analysis import bootstrap, metrics, paired

FACTORS = ("snr_db", "duration_ms", "orig_sr", "band")


def _key(value: object) -> str:
    """Level names as people write them: 20 not 20.0, 8000 not 8000.0."""
    return f"{value:g}" if isinstance(value, (int, float, np.number)) else str(value)


def groups_per_class(y: np.ndarray, groups: np.ndarray) -> dict[str, int]:
    """Distinct source groups among the speech and the non-speech clips."""
    y = np.asarray(y)
    return {"speech": int(len(set(groups[y == 1]))), "nonspeech": int(len(set(groups[y == 0])))}


def system_metrics(test: pd.DataFrame, pred: np.ndarray, n_boot: int, seed: int) -> dict:
    """n, groups per class, accuracy, balanced accuracy (95 % CI over source groups), recalls, per factor.

    ``test`` has ``y`` (1 = speech), ``group`` and the factors.
    The group counts travel with every CI: an interval over 7 groups is not one over 30.
    """
    y = test["y"].to_numpy()
    pred = np.asarray(pred).astype(int)
    groups = test["group"].to_numpy()
    ci = bootstrap.group_bootstrap_ci(metrics.balanced_accuracy, y, pred, groups, n_boot=n_boot, seed=seed)
    acc_ci = bootstrap.group_bootstrap_ci(metrics.accuracy, y, pred, groups, n_boot=n_boot, seed=seed)
    frame = test.assign(y=y, pred=pred)
    by = {}
    for factor in FACTORS:
        table = metrics.accuracy_by(frame, factor, label_col="y", pred_col="pred")
        by[factor] = {_key(row[factor]): {k: (None if pd.isna(row[k]) else round(float(row[k]), 4))
                                         for k in ("n", "accuracy", "balanced_accuracy")}
                      for _, row in table.iterrows()}
    return {
        "n": int(len(y)),
        "groups": groups_per_class(y, groups),
        "accuracy": round(metrics.accuracy(y, pred), 4),
        "accuracy_ci95": [round(acc_ci.low, 4), round(acc_ci.high, 4)],
        "balanced_accuracy": round(ci.estimate, 4),
        "balanced_accuracy_ci95": [round(ci.low, 4), round(ci.high, 4)],
        "recall": {k: round(v, 4) for k, v in metrics.per_class_recall(y, pred).items()},
        "by": by,
    }


def mcnemar(test_y: np.ndarray, model_pred: np.ndarray, other_pred: np.ndarray) -> dict:
    """Exact McNemar of the model against another system on the same clips."""
    res = paired.mcnemar_exact(model_pred == test_y, other_pred == test_y)
    return {k: (float(f"{v:.4g}") if isinstance(v, float) else int(v)) for k, v in res.items()}  # p can be 1e-12
