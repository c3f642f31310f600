"""Tests for qvad.analysis.lbfgsb: lockstep L-BFGS-B runs give scipy.optimize.minimize's result bit for bit.

The driver calls scipy's private compiled routine; a scipy upgrade that changes it must fail
here, not move the psychometric stage's metrics silently.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize

from qvad.analysis.lbfgsb import lbfgsb_runs
from qvad.analysis.psychometric_fit import _Problem


def _same_as_minimize(fun_and_grad, starts: list[np.ndarray], bounds: list[tuple[float, float]]) -> None:
    for x0, run in zip(starts, lbfgsb_runs(fun_and_grad, starts, bounds), strict=True):
        ref = optimize.minimize(fun_and_grad, x0, jac=True, method="L-BFGS-B", bounds=bounds)
        assert run.x.tobytes() == ref.x.tobytes() and run.fun == ref.fun and run.success == ref.success


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "guess_rate"), [("log_logistic", 0.5), ("logistic", None), ("weibull", 0.5)])
def test_psychometric_objective_matches_minimize_bit_for_bit(kind: str, guess_rate: float | None) -> None:
    """The objective the stage minimises, from its own starting grid plus a random start."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        n = rng.integers(10, 60, 7).astype(float)
        k = np.round(n * np.clip(np.linspace(0.3, 1.0, 7) + rng.normal(0, 0.1, 7), 0, 1))
        problem = _Problem(kind, np.linspace(-1, 1, 7), n, k, guess_rate, (0.0, 0.1))
        starts = problem.starts() + [rng.uniform(-1, 1, len(problem.bounds()))]
        _same_as_minimize(problem.nll_and_grad, starts, problem.bounds())


def _rosenbrock(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rosenbrock's function and gradient, per row of ``x`` (or for one point)."""
    a, b = x[..., 0], x[..., 1]
    f = (1.0 - a) ** 2 + 100.0 * (b - a * a) ** 2
    g = np.stack([-2.0 * (1.0 - a) - 400.0 * a * (b - a * a), 200.0 * (b - a * a)], axis=-1)
    return f, g


def test_runs_of_different_lengths_and_active_bounds_match_minimize() -> None:
    """Starts that converge after different numbers of steps, one at a bound that stays active."""
    starts = [np.array([-1.2, 1.0]), np.array([0.9, 0.8]), np.array([3.0, -2.0]), np.array([0.0, 0.0])]
    _same_as_minimize(_rosenbrock, starts, [(-2.0, 0.5), (-1.0, 2.0)])


def test_infinite_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="finite bounds"):
        lbfgsb_runs(_rosenbrock, [np.zeros(2)], [(-np.inf, 1.0), (0.0, 1.0)])
