"""Point metrics for the speech / non-speech detector, and their breakdowns by condition.

Conventions used throughout: label 1 = speech, 0 = non-speech; a prediction is
the model's yes (1) / no (0) answer; ``p_speech`` is the model's probability of
"yes". All metrics accept an optional ``sample_weight`` so that the group
bootstrap can re-weight clips instead of copying arrays (a resampled data set is
the original clips weighted by how often their group was drawn).

Breakdowns (accuracy by SNR, duration, ...) carry group-bootstrap intervals (qvad.analysis.bootstrap).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from qvad.analysis.bootstrap import group_bootstrap_ci
from qvad.analysis.validation import as_binary, check_same_length, as_weights

def _class_recalls(y_true: np.ndarray, y_pred: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted recall of class 0 and class 1; NaN for a class with zero weight (0/0)."""
    correct = (y_true == y_pred) * w
    recalls = []
    for cls in (0, 1):
        in_class = y_true == cls
        total = w[in_class].sum()
        recalls.append(correct[in_class].sum() / total if total > 0 else np.nan)
    return recalls[0], recalls[1]


def accuracy(y_true: object, y_pred: object, sample_weight: object | None = None) -> float:
    """Share of correct answers (equals sklearn's ``accuracy_score``).

    Implemented in numpy rather than wrapping sklearn because it runs thousands of
    times inside the bootstrap, where sklearn's input checks dominate the runtime.
    """
    yt, yp = as_binary(y_true, "y_true"), as_binary(y_pred, "y_pred")
    check_same_length(y_true=yt, y_pred=yp)
    w = as_weights(sample_weight, len(yt))
    if w.sum() <= 0:
        raise ValueError("sample_weight sums to zero")
    return float(((yt == yp) * w).sum() / w.sum())


def per_class_recall(y_true: object, y_pred: object, sample_weight: object | None = None) -> dict[str, float]:
    """Recall per class: ``speech`` = hit rate (sensitivity), ``nonspeech`` = specificity.

    A class absent from ``y_true`` gets NaN: its recall is undefined, not zero.
    """
    yt, yp = as_binary(y_true, "y_true"), as_binary(y_pred, "y_pred")
    check_same_length(y_true=yt, y_pred=yp)
    r0, r1 = _class_recalls(yt, yp, as_weights(sample_weight, len(yt)))
    return {"nonspeech": float(r0), "speech": float(r1)}


def balanced_accuracy(y_true: object, y_pred: object, sample_weight: object | None = None) -> float:
    """Mean of the two class recalls (equals sklearn's ``balanced_accuracy_score``).

    Reported instead of plain accuracy because it does not reward a detector that
    leans towards the majority class; chance level is 0.5 for any class mix.
    Raises a ValueError when a class is absent, since the mean is then undefined.
    """
    recalls = per_class_recall(y_true, y_pred, sample_weight)
    missing = [cls for cls, r in recalls.items() if np.isnan(r)]
    if missing:
        raise ValueError(f"balanced accuracy needs both classes; no {missing[0]} examples")
    return float(np.mean(list(recalls.values())))




def _level_row(
    level_df: pd.DataFrame, label_col: str, pred_col: str, group_col: str | None, n_boot: int, seed: int, alpha: float
) -> dict[str, float | int]:
    """Counts, accuracy, class recalls and balanced accuracy (NaN if one class) for one level."""
    y, p = level_df[label_col].to_numpy(), level_df[pred_col].to_numpy()
    recalls = per_class_recall(y, p)
    both = not any(np.isnan(list(recalls.values())))
    row: dict[str, float | int] = {
        "n": len(y),
        "n_speech": int((y == 1).sum()),
        "n_nonspeech": int((y == 0).sum()),
        "accuracy": accuracy(y, p),
        "balanced_accuracy": float(np.mean(list(recalls.values()))) if both else np.nan,
        "recall_speech": recalls["speech"],
        "recall_nonspeech": recalls["nonspeech"],
    }
    if n_boot and group_col is not None:
        groups = level_df[group_col].to_numpy()
        acc = group_bootstrap_ci(accuracy, y, p, groups, n_boot=n_boot, seed=seed, alpha=alpha)
        row |= {"accuracy_low": acc.low, "accuracy_high": acc.high}
        bacc_low = bacc_high = np.nan
        if both:
            bacc = group_bootstrap_ci(balanced_accuracy, y, p, groups, n_boot=n_boot, seed=seed, alpha=alpha)
            bacc_low, bacc_high = bacc.low, bacc.high
        row |= {"balanced_accuracy_low": bacc_low, "balanced_accuracy_high": bacc_high}
    return row


def accuracy_by(
    df: pd.DataFrame,
    column: str,
    *,
    label_col: str = "label",
    pred_col: str = "pred",
    group_col: str | None = None,
    n_boot: int = 0,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Accuracy, balanced accuracy and class recalls per level of ``column`` (SNR, duration, ...).

    One row per level (sorted; missing values form their own level) with ``n``
    and per-class counts, so thin cells are visible. Balanced accuracy is NaN at a
    level that holds only one class -- then the factor is confounded with the
    label (e.g. an original sample rate only speech sources have) and only the
    class recall is meaningful. With ``n_boot > 0``, group-bootstrap intervals are
    added per level; ``group_col`` is then required, because a clip-level
    bootstrap would understate the uncertainty.
    """
    missing = [c for c in (column, label_col, pred_col, group_col) if c is not None and c not in df.columns]
    if missing:
        raise ValueError(f"columns not in df: {missing}")
    if df.empty:
        raise ValueError("df is empty")
    if n_boot and group_col is None:
        raise ValueError("n_boot > 0 needs group_col: intervals must resample source groups")
    rows = []
    for i, (level, level_df) in enumerate(df.groupby(column, sort=True, dropna=False)):
        row = _level_row(level_df, label_col, pred_col, group_col, n_boot, seed + i, alpha)
        rows.append({column: level, **row})
    return pd.DataFrame(rows)
