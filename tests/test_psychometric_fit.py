"""Tests for qvad.analysis.psychometric_fit: threshold recovery, censoring, bootstrap intervals."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from scipy import special

from qvad.analysis.psychometric_fit import bootstrap_curve, bootstrap_thresholds, fit_psychometric

DURATIONS_MS = np.array([200.0, 300.0, 400.0, 600.0, 800.0, 1000.0])
SNRS_DB = np.array([-10.0, -5.0, 0.0, 5.0, 10.0, 20.0])
GUESS, LAPSE = 0.5, 0.04


def _log_logistic(alpha_ms: float, beta: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: GUESS + (1 - GUESS - LAPSE) * special.expit(beta * (np.log(x) - np.log(alpha_ms)))


def _true_threshold_log_logistic(alpha_ms: float, beta: float, target: float) -> float:
    f = (target - GUESS) / (1 - GUESS - LAPSE)
    return float(np.exp(np.log(alpha_ms) + special.logit(f) / beta))


def _trials(
    levels: np.ndarray,
    p_correct: dict[int, Callable[[np.ndarray], np.ndarray]],
    n_per_class: int,
    seed: int,
    groups_per_class: int = 20,
) -> pd.DataFrame:
    """Binomial responses per (level, class) from known curves, clips spread over source groups."""
    rng = np.random.default_rng(seed)
    frames = []
    for label, curve in p_correct.items():
        for x, p in zip(levels, curve(levels)):
            frames.append(
                pd.DataFrame(
                    {
                        "stim": x,
                        "label": label,
                        "correct": (rng.random(n_per_class) < p).astype(int),
                        "group": label * 1000 + rng.integers(0, groups_per_class, n_per_class),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def _both_classes(curve: Callable[[np.ndarray], np.ndarray]) -> dict[int, Callable[[np.ndarray], np.ndarray]]:
    return {0: curve, 1: curve}


def test_recovers_dt75_on_log_duration_axis() -> None:
    alpha_ms, beta = 350.0, 3.0
    trials = _trials(DURATIONS_MS, _both_classes(_log_logistic(alpha_ms, beta)), n_per_class=600, seed=1)
    fit = fit_psychometric(trials, "stim", kind="log_logistic")
    dt75 = fit.threshold(0.75)
    assert dt75.status == "ok"
    assert dt75.value == pytest.approx(_true_threshold_log_logistic(alpha_ms, beta, 0.75), rel=0.05)
    assert fit.threshold(0.9).value == pytest.approx(_true_threshold_log_logistic(alpha_ms, beta, 0.9), rel=0.08)
    assert fit.guess_rate == 0.5 and 0.0 <= fit.lapse_rate <= 0.1 and fit.converged


def test_recovers_snr75_with_logistic_and_weibull_duration() -> None:
    snr_curve = lambda x: GUESS + (1 - GUESS - LAPSE) * special.expit(0.3 * (x - 0.0))  # noqa: E731
    snr_fit = fit_psychometric(_trials(SNRS_DB, _both_classes(snr_curve), 600, seed=2), "stim")
    true_snr75 = special.logit((0.75 - GUESS) / (1 - GUESS - LAPSE)) / 0.3
    assert snr_fit.threshold(0.75).value == pytest.approx(true_snr75, abs=0.6)

    weibull = lambda x: GUESS + (1 - GUESS - LAPSE) * -np.expm1(-((x / 400.0) ** 2.5))  # noqa: E731
    dur_fit = fit_psychometric(_trials(DURATIONS_MS, _both_classes(weibull), 600, seed=3), "stim", kind="weibull")
    true_dt75 = 400.0 * (-np.log1p(-(0.75 - GUESS) / (1 - GUESS - LAPSE))) ** (1 / 2.5)
    assert dur_fit.threshold(0.75).value == pytest.approx(true_dt75, rel=0.05)


def test_class_curve_fits_free_guess_rate() -> None:
    # speech recall rises from a floor of 0.1; non-speech recall is irrelevant for this curve
    speech = lambda x: 0.1 + (1 - 0.1 - LAPSE) * special.expit(0.4 * (x - 2.0))  # noqa: E731
    trials = _trials(SNRS_DB, {0: lambda x: np.full_like(x, 0.9), 1: speech}, 800, seed=4)
    fit = fit_psychometric(trials, "stim", curve="speech")
    assert fit.guess_rate == pytest.approx(0.1, abs=0.04)
    assert fit.threshold(0.5).value == pytest.approx(2.0 + special.logit(0.4 / 0.86) / 0.4, abs=0.8)


def test_balanced_curve_weights_classes_equally() -> None:
    # 3x more non-speech trials: the effective k must equal n * balanced accuracy per level
    trials = pd.DataFrame(
        {
            "stim": np.repeat([1.0, 2.0, 3.0], 8),
            "label": np.tile([1, 1, 0, 0, 0, 0, 0, 0], 3),
            "correct": np.tile([1, 0, 1, 1, 1, 1, 1, 1], 3),
        }
    )
    fit = fit_psychometric(trials, "stim")
    np.testing.assert_allclose(fit.n, 8.0)
    np.testing.assert_allclose(fit.k, 8.0 * (0.5 + 1.0) / 2)


def test_out_of_range_thresholds_are_censored_not_extrapolated() -> None:
    late = _trials(DURATIONS_MS, _both_classes(_log_logistic(3000.0, 3.0)), 300, seed=5)
    above = fit_psychometric(late, "stim", kind="log_logistic").threshold(0.75)
    assert (above.status, above.bound) == ("above_range", 1000.0) and np.isnan(above.value)

    early = _trials(DURATIONS_MS, _both_classes(_log_logistic(60.0, 3.0)), 300, seed=6)
    below = fit_psychometric(early, "stim", kind="log_logistic").threshold(0.75)
    assert (below.status, below.bound) == ("below_range", 200.0) and np.isnan(below.value)

    lapsing = fit_psychometric(early, "stim", kind="log_logistic", lapse_bounds=(0.1, 0.1))
    never = lapsing.threshold(0.95)  # asymptote is 1 - 0.1 = 0.9
    assert (never.status, never.bound) == ("not_reached", 1000.0) and np.isnan(never.value)


def test_bootstrap_ci_covers_truth_and_is_deterministic() -> None:
    alpha_ms, beta = 350.0, 3.0
    trials = _trials(DURATIONS_MS, _both_classes(_log_logistic(alpha_ms, beta)), n_per_class=150, seed=7)
    table = bootstrap_thresholds(trials, "group", "stim", kind="log_logistic", targets=(0.75,), n_boot=150, seed=0)
    row = table.iloc[0]
    truth = _true_threshold_log_logistic(alpha_ms, beta, 0.75)
    assert row["status"] == "ok" and row["ci_low"] < truth < row["ci_high"]
    assert row["ci_low"] < row["threshold"] < row["ci_high"] and row["frac_censored"] == 0.0
    small = dict(kind="log_logistic", targets=(0.75,), n_boot=20)
    pd.testing.assert_frame_equal(
        bootstrap_thresholds(trials, "group", "stim", seed=1, **small),
        bootstrap_thresholds(trials, "group", "stim", seed=1, **small),
    )


@pytest.mark.slow
def test_curve_band_covers_true_curve_and_matches_threshold_intervals() -> None:
    alpha_ms, beta = 350.0, 3.0
    truth = _log_logistic(alpha_ms, beta)
    trials = _trials(DURATIONS_MS, _both_classes(truth), n_per_class=150, seed=7)
    grid = np.geomspace(DURATIONS_MS.min(), DURATIONS_MS.max(), 50)
    args = dict(kind="log_logistic", targets=(0.75,), n_boot=150, seed=0)
    table, band = bootstrap_curve(trials, "group", "stim", grid, **args)
    pd.testing.assert_frame_equal(table, bootstrap_thresholds(trials, "group", "stim", **args))
    assert (band["p_low"] <= band["p"]).all() and (band["p"] <= band["p_high"]).all()
    inside = (band["p_low"] <= truth(grid)) & (truth(grid) <= band["p_high"])
    assert inside.mean() >= 0.9, f"band covers the true curve at only {inside.mean():.0%} of the grid"
    assert (band["p_high"] - band["p_low"]).min() > 0
    with pytest.raises(ValueError, match="tested range"):
        bootstrap_curve(trials, "group", "stim", np.array([100.0, 500.0]), **args)


def test_bootstrap_reports_censored_fraction_and_limit() -> None:
    # true DT90 = 941 ms, just inside the tested 1000 ms: many resamples are censored above
    trials = _trials(DURATIONS_MS, _both_classes(_log_logistic(500.0, 3.0)), 150, seed=8)
    row = bootstrap_thresholds(trials, "group", "stim", kind="log_logistic", targets=(0.9,), n_boot=60, seed=0).iloc[0]
    assert row["frac_above_range"] + row["frac_not_reached"] == row["frac_censored"] > 0.025
    assert row["ci_high_status"] == "above_range" and np.isnan(row["ci_high"]) and row["range_max"] == 1000.0
    assert row["ci_low_status"] == "ok" and 200.0 < row["ci_low"] < 1000.0


@pytest.mark.parametrize(
    ("mutate", "kwargs", "message"),
    [
        (lambda df: df.drop(columns="correct"), {}, "columns not in trials"),
        (lambda df: df.assign(label=df["label"] * 2), {}, "only 0 and 1"),
        (lambda df: df[df["stim"] <= 300], {}, ">= 3 distinct levels"),
        (lambda df: df.iloc[0:0], {}, "empty"),
        (lambda df: df.assign(stim=df["stim"] - 500), {"kind": "log_logistic"}, "positive stimulus"),
        (lambda df: df, {"kind": "probit"}, "kind must be one of"),
    ],
)
def test_fit_input_errors(mutate: Callable[[pd.DataFrame], pd.DataFrame], kwargs: dict, message: str) -> None:
    trials = _trials(DURATIONS_MS, _both_classes(_log_logistic(350.0, 3.0)), 10, seed=9)
    with pytest.raises(ValueError, match=message):
        fit_psychometric(mutate(trials), "stim", **kwargs)


def test_bootstrap_rejects_target_at_chance() -> None:
    trials = _trials(DURATIONS_MS, _both_classes(_log_logistic(350.0, 3.0)), 10, seed=10)
    with pytest.raises(ValueError, match="exceed the fixed guess rate"):
        bootstrap_thresholds(trials, "group", "stim", targets=(0.5,), n_boot=5)


def test_objective_rows_match_single_evaluations() -> None:
    from qvad.analysis.psychometric_fit import _Problem

    problem = _Problem("logistic", np.linspace(-1, 1, 8), np.full(8, 20.0), np.arange(8) * 2.0 + 3, None, (0.0, 0.1))
    thetas = np.random.default_rng(1).uniform([-1, 0, 0, 0], [1, 3, 0.1, 0.5], size=(13, 4))
    nll, grad = problem.nll_and_grad(thetas)
    for theta, f, g in zip(thetas, nll, grad):
        f1, g1 = problem.nll_and_grad(theta)
        assert f == f1 and g.tobytes() == g1.tobytes()
