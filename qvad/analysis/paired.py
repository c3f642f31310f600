"""Paired comparisons of two systems scored on the same clips: McNemar over clips, and the
balanced-accuracy difference with a group-bootstrap CI (clips of one group are not independent)."""

from __future__ import annotations

import numpy as np
from scipy import stats

from qvad.analysis.bootstrap import stratified_group_resample
from qvad.analysis.metrics import balanced_accuracy
from qvad.analysis.validation import as_binary, check_same_length

def mcnemar_exact(correct_a: object, correct_b: object) -> dict[str, float | int]:
    """Exact two-sided McNemar test of two systems scored on the same clips.

    Only discordant clips carry information: ``b`` = A right and B wrong, ``c`` =
    A wrong and B right. Under H0 (equal accuracy) ``b ~ Binomial(b + c, 1/2)``;
    the p-value is scipy's exact two-sided binomial test (1.0 when there are no
    discordant clips). ``statistic`` is ``min(b, c)``.

    Caveat: the test treats clips as independent pairs. With correlated clips of
    one group it is anti-conservative; a group-bootstrap interval of the accuracy
    difference (``group_bootstrap_ci`` with a two-column ``y_pred``) is the
    group-aware complement.
    """
    a = as_binary(correct_a, "correct_a").astype(bool)
    b_arr = as_binary(correct_b, "correct_b").astype(bool)
    check_same_length(correct_a=a, correct_b=b_arr)
    b = int((a & ~b_arr).sum())
    c = int((~a & b_arr).sum())
    p_value = stats.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue if b + c else 1.0
    return {"b": b, "c": c, "n_discordant": b + c, "statistic": min(b, c), "p_value": float(p_value)}


def paired_ba_difference(y_true: object, pred_a: object, pred_b: object, groups: object, *,
                         n_boot: int, seed: int, alpha: float = 0.05) -> dict[str, float | int]:
    """Balanced accuracy of A minus B, with a CI from one group bootstrap that resamples both together.

    Each resample draws whole source groups (class-stratified, as every CI here) and scores both
    systems on the *same* draw, so the interval reflects the pairing that McNemar's clip-level
    test assumes away. ``p_value`` is the two-sided bootstrap p of "no difference": twice the
    smaller share of resampled differences on either side of zero (at least 1 / n_boot).
    """
    yt = as_binary(y_true, "y_true")
    a, b = as_binary(pred_a, "pred_a"), as_binary(pred_b, "pred_b")
    check_same_length(y_true=yt, pred_a=a, pred_b=b)
    group_index, counts = stratified_group_resample(yt, groups, n_boot, seed)
    estimate = balanced_accuracy(yt, a) - balanced_accuracy(yt, b)
    diffs = np.array([balanced_accuracy(yt, a, w) - balanced_accuracy(yt, b, w)
                      for w in (row[group_index].astype(float) for row in counts)])
    return summarize_difference(estimate, diffs, alpha)


def summarize_difference(estimate: float, diffs: np.ndarray, alpha: float = 0.05) -> dict[str, float | int]:
    """A paired difference and its ``len(diffs)`` resampled values: percentile CI and bootstrap p.

    ``p_value`` is twice the smaller share of resampled differences on either side of zero, at
    least 1 / n_boot (no resample count can show a smaller p).
    """
    n_boot = len(diffs)
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, max(2 * min((diffs <= 0).mean(), (diffs >= 0).mean()), 1 / n_boot))
    return {"difference": float(estimate), "ci95": [float(low), float(high)], "p_value": float(p),
            "n_boot": int(n_boot)}


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment of a family of p-values (controls the family-wise error rate)."""
    order = sorted(p_values, key=lambda k: (p_values[k], k))
    m, running, adjusted = len(order), 0.0, {}
    for i, key in enumerate(order):
        running = max(running, min(1.0, (m - i) * p_values[key]))
        adjusted[key] = running
    return adjusted
