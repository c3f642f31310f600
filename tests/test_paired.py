"""Tests for qvad.analysis.paired: McNemar's exact test on paired predictions."""

from __future__ import annotations

import pytest

from qvad.analysis import paired


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
