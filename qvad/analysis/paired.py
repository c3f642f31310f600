"""Paired comparison of two systems scored on the same clips."""

from __future__ import annotations

from scipy import stats

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
