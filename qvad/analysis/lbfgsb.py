"""Many ``scipy.optimize.minimize(method="L-BFGS-B")`` runs in lockstep, bit-identical to minimize's.

The psychometric fits (:mod:`qvad.analysis.psychometric_fit`) minimise 3-4 parameters from a grid of
starts some 10^6 times per stage. minimize's wrappers cost more than those objectives, so
:func:`lbfgsb_runs` drives scipy's compiled routine (``_lbfgsb.setulb``, the interface of
scipy >= 1.15) itself, with minimize's default settings, and evaluates every start's next point in
one vectorised call. Results are bit-identical to minimize's (tests/test_lbfgsb.py): a scipy
upgrade that changes the private routine fails there instead of moving the stage's metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import _lbfgsb

# scipy.optimize.minimize's defaults for method="L-BFGS-B" (see :class:`_Run`)
_LBFGSB_MEMORY = 10
_LBFGSB_FACTR = 2.2204460492503131e-09 / np.finfo(float).eps  # ftol / eps
_LBFGSB_PGTOL = 1e-5
_LBFGSB_MAXLS = 20
_LBFGSB_MAXFUN = 15000
_LBFGSB_MAXITER = 15000
_TASK_NEW_X, _TASK_FG, _TASK_CONVERGENCE, _TASK_STOP = 1, 3, 4, 5
_STOP_MAXFUN, _STOP_MAXITER = 502, 504


@dataclass(frozen=True)
class Optimum:
    """What callers use of an L-BFGS-B run: the optimiser vector, its objective and convergence."""

    x: np.ndarray
    fun: float
    success: bool


class _Run:
    """One ``scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=...)`` run, steppable.

    Why not minimize itself: the psychometric fits have 3-4 parameters and 7-8 levels, so
    minimize's set-up and per-evaluation wrappers (ScalarFunction, MemoizeJac, copies, checks) cost
    more than the objective, and one objective call per run wastes numpy's per-call overhead; the
    stage runs ~10^6 evaluations. This drives the same compiled routine (scipy's
    ``_lbfgsb.setulb``, the interface of scipy >= 1.15) with minimize's default settings through
    the same reverse-communication loop -- the objective at the clipped ``x0`` first, evaluated
    again only when ``x`` changed, the same iteration and evaluation limits -- but pauses
    whenever it needs a new evaluation, so that :func:`lbfgsb_runs` can evaluate all starts
    in one call. ``x``, ``fun`` and ``success`` are bit-identical to minimize's (tested).
    Bounds must be finite (every psychometric box is).
    """

    def __init__(self, x0: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
        n, m = x0.size, _LBFGSB_MEMORY
        self.low, self.high = low, high
        self.x = np.clip(np.asarray(x0, dtype=np.float64), low, high)
        self.x_seen: np.ndarray | None = None  # where f_seen / g_seen were evaluated
        self.f_seen, self.g_seen = np.nan, np.zeros(n)
        self.evals = self.iterations = 0
        self.f, self.g = np.array(0.0), np.zeros(n)
        self.nbd = np.full(n, 2, dtype=np.int32)  # 2: lower and upper bound
        self.wa = np.zeros(2 * m * n + 5 * n + 11 * m * m + 8 * m)
        self.iwa, self.task, self.ln_task = np.zeros(3 * n, np.int32), np.zeros(2, np.int32), np.zeros(2, np.int32)
        self.lsave, self.isave, self.dsave = np.zeros(4, np.int32), np.zeros(44, np.int32), np.zeros(29)

    def tell(self, f: float, g: np.ndarray) -> None:
        """The objective and gradient at the current ``x``."""
        self.x_seen, self.f_seen, self.g_seen = self.x.copy(), f, g
        self.evals += 1

    def resume(self) -> bool:
        """Step until the routine asks for the objective at a point not evaluated yet (True) or stops (False)."""
        while True:
            if self.task[0] == _TASK_FG:
                if not (self.x == self.x_seen).all():  # np.array_equal's test, without its overhead
                    return True
                self.f, self.g = self.f_seen, self.g_seen
            self.g = self.g.astype(np.float64)  # a fresh copy each call, as minimize passes it
            _lbfgsb.setulb(_LBFGSB_MEMORY, self.x, self.low, self.high, self.nbd, self.f, self.g, _LBFGSB_FACTR,
                           _LBFGSB_PGTOL, self.wa, self.iwa, self.task, self.lsave, self.isave, self.dsave,
                           _LBFGSB_MAXLS, self.ln_task)
            if self.task[0] == _TASK_NEW_X:
                self.iterations += 1
                if self.iterations >= _LBFGSB_MAXITER:
                    self.task[:] = (_TASK_STOP, _STOP_MAXITER)
                elif self.evals > _LBFGSB_MAXFUN:
                    self.task[:] = (_TASK_STOP, _STOP_MAXFUN)
            elif self.task[0] != _TASK_FG:
                return False

    def result(self) -> Optimum:
        """The final point, its objective and whether the routine reported convergence."""
        return Optimum(x=self.x, fun=float(self.f), success=bool(self.task[0] == _TASK_CONVERGENCE))


def lbfgsb_runs(fun_and_grad: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], starts: list[np.ndarray],
                 bounds: list[tuple[float, float]]) -> list[Optimum]:
    """An L-BFGS-B run from each of ``starts``; ``fun_and_grad`` maps a matrix of points (one per row)
    to their objectives and gradients. Each run is exactly minimize's from that start (:class:`_Run`)."""
    low, high = (np.array(b, dtype=np.float64) for b in zip(*bounds))
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ValueError(f"L-BFGS-B here needs finite bounds, got {bounds}")
    runs = [_Run(x0, low, high) for x0 in starts]
    waiting = runs
    while waiting:
        f, g = fun_and_grad(np.array([run.x for run in waiting]))
        for run, f_run, g_run in zip(waiting, f, g):
            run.tell(float(f_run), g_run)
        waiting = [run for run in waiting if run.resume()]
    return [run.result() for run in runs]
