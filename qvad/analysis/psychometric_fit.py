"""Psychometric functions of detection performance vs stimulus level (duration, SNR).

Model, as psychophysicists fit it::

    psi(x) = gamma + (1 - gamma - lambda) * F(beta * (t(x) - a))

``gamma`` is the guess rate (performance far below threshold), ``lambda`` the lapse
rate (errors no stimulus level removes, bounded to [0, 0.1] by default so that a
few stray errors at the top cannot drag the slope), ``t`` the stimulus axis and
``F`` a sigmoid. ``kind`` picks the pair:

* ``"logistic"``: ``t(x) = x`` and logistic ``F`` -- for SNR in dB.
* ``"log_logistic"``: ``t(x) = ln x`` and logistic ``F`` -- for duration, whose
  effect is multiplicative (200 -> 400 ms matters like 500 -> 1000 ms).
* ``"weibull"``: ``t(x) = ln x`` and ``F(u) = 1 - exp(-exp(u))``, i.e. the Weibull
  ``1 - exp(-(x / alpha) ** beta)`` -- the classic alternative for duration.

``curve`` picks what is fitted from a trial table (one row per clip: stimulus
level, ``label`` 1 speech / 0 non-speech, ``correct`` 0/1, source ``group``):

* ``"balanced"``: balanced accuracy, with ``gamma`` fixed at 0.5 (chance for any
  class mix). Likelihood: an *effective binomial* per level with
  ``n = n_speech + n_nonspeech`` trials and ``k = n * balanced_accuracy`` successes,
  i.e. each trial weighted by ``n / (2 n_class)``. With the balanced design of the
  mix stage all weights are 1 and this is exactly the binomial likelihood of the
  pooled correct answers; otherwise it stops the larger class from dominating.
  Levels holding only one class carry no balanced-accuracy information and are
  skipped.
* ``"speech"`` / ``"nonspeech"``: that class's recall, ``gamma`` free (the floor
  need not be 0.5: a detector may answer "no" to every drowned clip).

Fitting is maximum likelihood (L-BFGS-B with analytic gradient) from a fixed grid
of starting points, so results are deterministic. Confidence intervals come from
:func:`bootstrap_thresholds`, which resamples source groups and refits, because
the binomial likelihood treats clips as independent and they are not.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import special
from threadpoolctl import threadpool_limits

from qvad.analysis.bootstrap import stratified_group_resample
from qvad.analysis.lbfgsb import Optimum, lbfgsb_runs

Kind = Literal["logistic", "log_logistic", "weibull"]
Curve = Literal["balanced", "speech", "nonspeech"]
Status = Literal["ok", "below_range", "above_range", "not_reached"]

_KINDS = ("logistic", "log_logistic", "weibull")
_CURVES = ("balanced", "speech", "nonspeech")
_MIN_LEVELS = 3
_EPS = 1e-12
_LOG_SLOPE_BOUNDS = (np.log(1e-3), np.log(1e3))  # slope per half tested range
_LOCATION_BOUNDS = (-4.0, 4.0)  # in half tested ranges from the range centre
_START_LOCATIONS = (-0.5, 0.0, 0.5)
_START_LOG_SLOPES = (np.log(2.0), np.log(8.0))
_START_GUESS_RATES = (0.05, 0.3)


# --------------------------------------------------------------------------- model


def _axis(x: np.ndarray, kind: Kind) -> np.ndarray:
    """Stimulus axis ``t(x)``: identity for logistic, natural log for the other kinds."""
    if kind == "logistic":
        return np.asarray(x, dtype=float)
    x = np.asarray(x, dtype=float)
    if (x <= 0).any():
        raise ValueError(f"kind={kind!r} needs positive stimulus levels (log axis)")
    return np.log(x)


def _inverse_axis(t: float, kind: Kind) -> float:
    """Inverse of :func:`_axis`."""
    return float(t if kind == "logistic" else np.exp(t))


def _sigmoid(u: np.ndarray, kind: Kind) -> tuple[np.ndarray, np.ndarray]:
    """``F(u)`` and ``F'(u)``: logistic, or Gumbel (Weibull on a log axis)."""
    u = _clip(u, -50.0, 50.0)
    if kind == "weibull":
        eu = np.exp(np.minimum(u, 5.0))  # F = 1 to double precision beyond u = 5
        f = -np.expm1(-eu)
        return f, np.where(u > 5.0, 0.0, eu * np.exp(-eu))
    f = special.expit(u)
    return f, f * (1.0 - f)


def _clip(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """``np.clip`` for float arrays, bit for bit, without its Python-level dispatch.

    The objective runs some 10^6 times per stage, and ``np.clip``'s wrapper costs as much as the
    arithmetic on these 7-8 element arrays.
    """
    return np.minimum(np.maximum(x, low), high)


def _sigmoid_inverse(f: float, kind: Kind) -> float:
    """``u`` with ``F(u) = f`` for ``0 < f < 1``."""
    return float(np.log(-np.log1p(-f)) if kind == "weibull" else special.logit(f))


@dataclass(frozen=True)
class Threshold:
    """Stimulus level where the fitted curve reaches ``target`` performance.

    ``status`` is ``"ok"`` (``value`` set, ``bound`` NaN) or censored, with
    ``value`` NaN and ``bound`` the tested-range edge: ``"below_range"`` (already
    at or above target at the lowest tested level; threshold <= ``bound``),
    ``"above_range"`` (reached only beyond the highest tested level; threshold >
    ``bound``) or ``"not_reached"`` (the asymptote ``1 - lambda`` is below target).
    Censored thresholds are never extrapolated: the curve's shape outside the
    tested range is unsupported by data.
    """

    target: float
    value: float
    status: Status
    bound: float


@dataclass(frozen=True)
class PsychometricFit:
    """Maximum-likelihood psychometric function and the data it was fitted to.

    ``alpha`` is the location in stimulus units (dB, or ms for the log-axis kinds
    where it is ``exp(a)``; for ``weibull`` it is the usual Weibull scale), ``beta``
    the slope per unit of the axis ``t`` (per dB, or per natural-log unit).
    ``levels``, ``n`` and ``k`` are the (effective) binomial counts used, ``nll``
    the minimised negative log-likelihood and ``deviance`` its distance from the
    saturated model (large values flag misfit, or correlated clips).
    """

    kind: Kind
    curve: Curve
    alpha: float
    beta: float
    guess_rate: float
    lapse_rate: float
    x_min: float
    x_max: float
    levels: np.ndarray
    n: np.ndarray
    k: np.ndarray
    nll: float
    deviance: float
    converged: bool

    def _location(self) -> float:
        """``alpha`` on the axis ``t``."""
        return float(_axis(np.array([self.alpha]), self.kind)[0])

    def predict(self, x: object) -> np.ndarray:
        """Predicted performance ``psi(x)``."""
        f, _ = _sigmoid(self.beta * (_axis(np.atleast_1d(x), self.kind) - self._location()), self.kind)
        return self.guess_rate + (1.0 - self.guess_rate - self.lapse_rate) * f

    def threshold(self, target: float) -> Threshold:
        """Stimulus level where ``psi = target`` (e.g. 0.75 -> DT75 / SNR-75), censored to the tested range.

        ``target`` is on the curve's own performance scale: for ``curve="balanced"``
        DT75 is the duration where predicted balanced accuracy equals 0.75; for
        ``curve="speech"`` SNR-50 is the SNR where predicted speech recall is 0.5.
        """
        if not 0 < target < 1:
            raise ValueError(f"target must be in (0, 1), got {target}")
        span = 1.0 - self.guess_rate - self.lapse_rate
        f = (target - self.guess_rate) / span if span > 0 else np.inf
        if f >= 1:
            return Threshold(target, np.nan, "not_reached", self.x_max)
        if f <= 0:
            return Threshold(target, np.nan, "below_range", self.x_min)
        x = _inverse_axis(self._location() + _sigmoid_inverse(f, self.kind) / self.beta, self.kind)
        if x < self.x_min:
            return Threshold(target, np.nan, "below_range", self.x_min)
        if x > self.x_max:
            return Threshold(target, np.nan, "above_range", self.x_max)
        return Threshold(target, x, "ok", np.nan)


# --------------------------------------------------------------------------- trial table -> counts


def _validate_trials(trials: pd.DataFrame, stim_col: str, binary_cols: list[str]) -> None:
    """ValueError for a missing column, an empty table, a non-finite stimulus or a non-0/1 column."""
    missing = [c for c in [stim_col, *binary_cols] if c not in trials.columns]
    if missing:
        raise ValueError(f"columns not in trials: {missing}")
    if trials.empty:
        raise ValueError("trials is empty")
    for col in binary_cols:
        if not trials[col].isin((0, 1)).all():
            raise ValueError(f"column {col!r} must contain only 0 and 1")
    if not np.isfinite(trials[stim_col].to_numpy(dtype=float)).all():
        raise ValueError(f"stimulus column {stim_col!r} has missing or non-finite values")


def _class_counts(
    level_index: np.ndarray, labels: np.ndarray, correct: np.ndarray, n_levels: int, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted trials ``n[level, class]`` and correct answers ``k[level, class]``."""
    cell = level_index * 2 + labels
    n = np.bincount(cell, weights=weights, minlength=2 * n_levels).reshape(n_levels, 2)
    k = np.bincount(cell, weights=weights * correct, minlength=2 * n_levels).reshape(n_levels, 2)
    return n, k


def _curve_counts(n: np.ndarray, k: np.ndarray, curve: Curve) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binomial ``(n, k)`` per level for ``curve`` and the mask of levels that carry information.

    For ``"balanced"`` this is the effective binomial described in the module
    docstring; levels missing a class are masked out. For a class curve, levels
    without trials of that class are masked out.
    """
    if curve == "balanced":
        usable = (n > 0).all(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            bacc = (k / n).mean(axis=1)
        n_eff = n.sum(axis=1)
        return n_eff, np.where(usable, n_eff * bacc, 0.0), usable
    cls = 1 if curve == "speech" else 0
    return n[:, cls], k[:, cls], n[:, cls] > 0


# --------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class _Problem:
    """A fit in scaled coordinates ``z = (t - centre) / half_range``, tested range -> [-1, 1]."""

    kind: Kind
    z: np.ndarray
    n: np.ndarray
    k: np.ndarray
    guess_rate: float | None  # None = free parameter
    lapse_bounds: tuple[float, float]

    def unpack(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | float]:
        """``(location, log_slope, lapse, guess)`` from an optimiser vector (scalars), or from a matrix
        of them, one per row (then columns, which broadcast against the levels)."""
        values = theta.T[..., None] if theta.ndim == 2 else theta
        guess = values[3] if self.guess_rate is None else self.guess_rate
        return values[0], values[1], values[2], guess

    def psi(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Clipped ``psi`` at each level, with ``F``, ``F'`` and ``u`` for the gradient (a row per row of ``theta``)."""
        loc, log_slope, lapse, guess = self.unpack(theta)
        u = np.exp(log_slope) * (self.z - loc)
        f, df = _sigmoid(u, self.kind)
        psi = _clip(guess + (1.0 - guess - lapse) * f, _EPS, 1.0 - _EPS)
        return psi, f, df, u

    def nll_and_grad(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Binomial negative log-likelihood and its gradient w.r.t. ``theta``, per row of ``theta``.

        Rows are the L-BFGS-B runs from the different starts (:func:`lbfgsb_runs`): one call
        evaluates them all, since on 7-8 levels numpy's per-call overhead is most of the cost.
        Every operation is elementwise or a sum along the levels, so each row gets the same
        bits as a call with that row alone.
        """
        loc, log_slope, lapse, guess = self.unpack(theta)
        psi, f, df, u = self.psi(theta)
        miss = self.n - self.k
        not_psi = 1.0 - psi
        nll = -(special.xlogy(self.k, psi) + special.xlogy(miss, not_psi)).sum(axis=-1)
        dnll_dpsi = -(self.k / psi - miss / not_psi)
        span_df = (1.0 - guess - lapse) * df
        dpsi = [span_df * -np.exp(log_slope), span_df * u, -f]
        if self.guess_rate is None:
            dpsi.append(1.0 - f)
        return nll, (dnll_dpsi[..., None, :] * np.stack(dpsi, axis=-2)).sum(axis=-1)

    def bounds(self) -> list[tuple[float, float]]:
        """Box constraints: location, log slope, lapse and (if free) guess rate with guess + lapse < 1."""
        b = [_LOCATION_BOUNDS, _LOG_SLOPE_BOUNDS, self.lapse_bounds]
        if self.guess_rate is None:
            b.append((0.0, 1.0 - self.lapse_bounds[1] - 1e-6))
        return b

    def starts(self) -> list[np.ndarray]:
        """The deterministic grid of starting points."""
        lapse0 = float(np.clip(0.02, *self.lapse_bounds))
        guesses = _START_GUESS_RATES if self.guess_rate is None else (None,)
        grid = itertools.product(_START_LOCATIONS, _START_LOG_SLOPES, guesses)
        return [np.array([loc, ls, lapse0] + ([] if g is None else [g])) for loc, ls, g in grid]


def _single_threaded_blas() -> threadpool_limits:
    """Limit BLAS to one thread: L-BFGS-B on 3-4 parameters is ~7x slower when BLAS spawns threads.

    (threadpoolctl is a dependency of scikit-learn, so it is always installed.)
    """
    return threadpool_limits(limits=1, user_api="blas")


def _minimise(problem: _Problem, starts: list[np.ndarray]) -> Optimum:
    """Best L-BFGS-B result over ``starts`` (first wins ties, so the choice is deterministic)."""
    best = None
    for res in lbfgsb_runs(problem.nll_and_grad, starts, problem.bounds()):
        if best is None or res.fun < best.fun - 1e-9:
            best = res
    return best


def _deviance(n: np.ndarray, k: np.ndarray, psi: np.ndarray) -> float:
    """``2 * (loglik_saturated - loglik_model)`` for binomial counts."""
    terms = special.xlogy(k, k / (n * psi)) + special.xlogy(n - k, (n - k) / (n * (1.0 - psi)))
    return float(2.0 * terms.sum())


@dataclass(frozen=True)
class _Design:
    """Everything about a trial table that does not change between bootstrap resamples."""

    kind: Kind
    curve: Curve
    levels: np.ndarray
    level_index: np.ndarray
    labels: np.ndarray
    correct: np.ndarray
    centre: float
    half_range: float
    guess_rate: float | None
    lapse_bounds: tuple[float, float]

    def fit(
        self, weights: np.ndarray, warm_start: np.ndarray | None = None
    ) -> tuple[PsychometricFit, np.ndarray] | None:
        """Fit to the trials weighted by ``weights``; None if < 3 levels carry information.

        Returns the fit and its optimiser vector (the bootstrap's warm start).
        Starts from the fixed grid, preceded by ``warm_start`` if given (the
        full-data MLE in the bootstrap: alone it misses the optimum now and then).
        """
        n_cls, k_cls = _class_counts(self.level_index, self.labels, self.correct, len(self.levels), weights)
        n, k, usable = _curve_counts(n_cls, k_cls, self.curve)
        if usable.sum() < _MIN_LEVELS:
            return None
        z = (_axis(self.levels[usable], self.kind) - self.centre) / self.half_range
        problem = _Problem(self.kind, z, n[usable], k[usable], self.guess_rate, self.lapse_bounds)
        res = _minimise(problem, ([] if warm_start is None else [warm_start]) + problem.starts())
        return self._to_fit(problem, res, self.levels[usable]), res.x

    def _to_fit(self, problem: _Problem, res: Optimum, levels: np.ndarray) -> PsychometricFit:
        """Translate scaled optimiser parameters to stimulus units."""
        loc, log_slope, lapse, guess = problem.unpack(res.x)
        return PsychometricFit(
            kind=self.kind,
            curve=self.curve,
            alpha=_inverse_axis(self.centre + self.half_range * loc, self.kind),
            beta=float(np.exp(log_slope) / self.half_range),
            guess_rate=float(guess),
            lapse_rate=float(lapse),
            x_min=float(self.levels.min()),
            x_max=float(self.levels.max()),
            levels=levels,
            n=problem.n,
            k=problem.k,
            nll=float(res.fun),
            deviance=_deviance(problem.n, problem.k, problem.psi(res.x)[0]),
            converged=bool(res.success),
        )


def _design(
    trials: pd.DataFrame,
    stim_col: str,
    kind: Kind,
    curve: Curve,
    label_col: str,
    correct_col: str,
    guess_rate: float | None | Literal["auto"],
    lapse_bounds: tuple[float, float],
) -> _Design:
    """Validate the arguments and encode the trial table."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    if curve not in _CURVES:
        raise ValueError(f"curve must be one of {_CURVES}, got {curve!r}")
    lo, hi = lapse_bounds
    if not 0 <= lo <= hi < 0.5:
        raise ValueError(f"lapse_bounds must satisfy 0 <= low <= high < 0.5, got {lapse_bounds}")
    if guess_rate == "auto":
        guess_rate = 0.5 if curve == "balanced" else None
    if guess_rate is not None and not 0 <= guess_rate < 1 - hi:
        raise ValueError(f"guess_rate must be in [0, 1 - max lapse), got {guess_rate}")
    _validate_trials(trials, stim_col, [label_col, correct_col])
    levels, level_index = np.unique(trials[stim_col].to_numpy(dtype=float), return_inverse=True)
    if len(levels) < _MIN_LEVELS:
        raise ValueError(f"need >= {_MIN_LEVELS} distinct levels of {stim_col!r}, got {len(levels)}")
    t = _axis(levels, kind)
    return _Design(
        kind=kind,
        curve=curve,
        levels=levels,
        level_index=level_index,
        labels=trials[label_col].to_numpy(dtype=np.int64),
        correct=trials[correct_col].to_numpy(dtype=float),
        centre=float((t.max() + t.min()) / 2),
        half_range=float((t.max() - t.min()) / 2),
        guess_rate=guess_rate,
        lapse_bounds=(float(lo), float(hi)),
    )


def fit_psychometric(
    trials: pd.DataFrame,
    stim_col: str,
    *,
    kind: Kind = "logistic",
    curve: Curve = "balanced",
    label_col: str = "label",
    correct_col: str = "correct",
    guess_rate: float | None | Literal["auto"] = "auto",
    lapse_bounds: tuple[float, float] = (0.0, 0.1),
) -> PsychometricFit:
    """Maximum-likelihood psychometric function of ``curve`` performance vs ``stim_col``.

    ``guess_rate="auto"`` fixes gamma at 0.5 for ``"balanced"`` and frees it for a
    class curve; a float fixes it, None frees it. Needs >= 3 stimulus levels with
    information (both classes for ``"balanced"``). Check ``converged`` and
    ``deviance`` before trusting the parameters.
    """
    design = _design(trials, stim_col, kind, curve, label_col, correct_col, guess_rate, lapse_bounds)
    return _fit_full(design, stim_col)[0]


def _fit_full(design: _Design, stim_col: str) -> tuple[PsychometricFit, np.ndarray]:
    """Unweighted fit from the full start grid; ValueError if < 3 levels carry information."""
    with _single_threaded_blas():
        result = design.fit(np.ones(len(design.labels)))
    if result is None:
        raise ValueError(f"fewer than {_MIN_LEVELS} levels of {stim_col!r} hold trials for curve={design.curve!r}")
    return result


# --------------------------------------------------------------------------- bootstrap


def _censored_value(th: Threshold) -> float:
    """Threshold on an extended line: below-range -> -inf, above / not reached -> +inf."""
    if th.status == "ok":
        return th.value
    return -np.inf if th.status == "below_range" else np.inf


def _limit(value: float) -> tuple[float, str]:
    """An interval limit and its status: finite -> ``"ok"``, -inf / +inf -> censored below / above the range."""
    if np.isfinite(value):
        return float(value), "ok"
    return np.nan, "below_range" if value < 0 else "above_range"


def _summarise(
    target: float, point: Threshold, boot: list[Threshold], n_boot: int, alpha: float, fit: PsychometricFit
) -> dict[str, float | str | int]:
    """One output row: estimate, percentile interval with censoring status, censoring fractions."""
    values = np.array([_censored_value(th) for th in boot])
    statuses = np.array([th.status for th in boot])
    # 'inverted_cdf' returns an actual order statistic, so a limit falling in the
    # censored mass comes out as +-inf instead of an interpolation with infinity.
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
    (ci_low, low_status), (ci_high, high_status) = _limit(low), _limit(high)
    frac = {s: float((statuses == s).mean()) for s in ("below_range", "above_range", "not_reached")}
    return {
        "target": target,
        "threshold": point.value,
        "status": point.status,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "ci_low_status": low_status,
        "ci_high_status": high_status,
        "range_min": fit.x_min,
        "range_max": fit.x_max,
        "frac_below_range": frac["below_range"],
        "frac_above_range": frac["above_range"],
        "frac_not_reached": frac["not_reached"],
        "frac_censored": float(sum(frac.values())),
        "n_boot": n_boot,
        "n_unfit": n_boot - len(boot),
    }


def _resample_fits(
    trials: pd.DataFrame, group_col: str, stim_col: str, targets: tuple[float, ...], n_boot: int, seed: int,
    alpha: float, design_args: tuple,
) -> tuple[PsychometricFit, list[PsychometricFit]]:
    """The full-data fit and one refit per group-bootstrap resample (those with >= 3 informative levels)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not targets:
        raise ValueError("targets is empty")
    if group_col not in trials.columns:
        raise ValueError(f"columns not in trials: [{group_col!r}]")
    design = _design(trials, stim_col, *design_args)
    if design.guess_rate is not None and min(targets) <= design.guess_rate:
        raise ValueError(f"targets must exceed the fixed guess rate {design.guess_rate}, got {min(targets)}")
    point, theta = _fit_full(design, stim_col)
    group_index, counts = stratified_group_resample(design.labels, trials[group_col].to_numpy(), n_boot, seed)
    with _single_threaded_blas():
        boot_fits = [design.fit(row[group_index].astype(float), warm_start=theta) for row in counts]
    fits = [f for f, _ in filter(None, boot_fits)]
    if not fits:
        raise ValueError("no bootstrap resample had >= 3 informative levels")
    return point, fits


def bootstrap_thresholds(
    trials: pd.DataFrame,
    group_col: str,
    stim_col: str,
    *,
    targets: tuple[float, ...] = (0.75, 0.9),
    kind: Kind = "logistic",
    curve: Curve = "balanced",
    label_col: str = "label",
    correct_col: str = "correct",
    guess_rate: float | None | Literal["auto"] = "auto",
    lapse_bounds: tuple[float, float] = (0.0, 0.1),
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Thresholds at ``targets`` with ``1 - alpha`` group-bootstrap percentile intervals.

    Each resample draws source groups with replacement, stratified by class (see
    :func:`qvad.analysis.bootstrap.stratified_group_resample`), and refits the curve from the
    full-data MLE and the fixed start grid (deterministic for ``seed``).
    Censored resample thresholds sit at -inf (below range) or +inf (above range,
    not reached) when taking percentiles; an interval limit that lands in that
    mass is NaN with ``ci_low_status`` / ``ci_high_status`` = ``"below_range"``
    (limit < ``range_min``) or ``"above_range"`` (limit > ``range_max``). ``frac_*`` report how often
    each censoring occurred among the fitted resamples; ``n_unfit`` counts
    resamples left with < 3 informative levels (excluded).
    One row per target; ``threshold`` is the full-data estimate (NaN if censored,
    see ``status``).
    """
    design_args = (kind, curve, label_col, correct_col, guess_rate, lapse_bounds)
    point, fits = _resample_fits(trials, group_col, stim_col, targets, n_boot, seed, alpha, design_args)
    return _threshold_table(point, fits, targets, n_boot, alpha)


def _threshold_table(point: PsychometricFit, fits: list[PsychometricFit], targets: tuple[float, ...], n_boot: int,
                     alpha: float) -> pd.DataFrame:
    """One :func:`_summarise` row per target."""
    return pd.DataFrame(
        [_summarise(t, point.threshold(t), [f.threshold(t) for f in fits], n_boot, alpha, point) for t in targets]
    )


def bootstrap_curve(
    trials: pd.DataFrame,
    group_col: str,
    stim_col: str,
    grid: np.ndarray,
    *,
    targets: tuple[float, ...] = (0.75, 0.9),
    kind: Kind = "logistic",
    curve: Curve = "balanced",
    label_col: str = "label",
    correct_col: str = "correct",
    guess_rate: float | None | Literal["auto"] = "auto",
    lapse_bounds: tuple[float, float] = (0.0, 0.1),
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`bootstrap_thresholds` plus the fitted curve on ``grid`` with its pointwise band.

    Both come from the same resample fits, so the band and the threshold intervals agree.
    The band is the ``1 - alpha`` percentile interval of the resampled curves at each grid
    point: columns ``stim_col``, ``p`` (full-data fit), ``p_low``, ``p_high``. ``grid`` must
    lie inside the tested range: the curve's shape outside it is not supported by data.
    """
    grid = np.asarray(grid, dtype=float)
    design_args = (kind, curve, label_col, correct_col, guess_rate, lapse_bounds)
    point, fits = _resample_fits(trials, group_col, stim_col, targets, n_boot, seed, alpha, design_args)
    if grid.size and (grid.min() < point.x_min or grid.max() > point.x_max):
        raise ValueError(f"grid must lie in the tested range [{point.x_min:g}, {point.x_max:g}]")
    curves = np.array([f.predict(grid) for f in fits])
    low, high = np.quantile(curves, [alpha / 2, 1 - alpha / 2], axis=0)
    band = pd.DataFrame({stim_col: grid, "p": point.predict(grid), "p_low": low, "p_high": high})
    return _threshold_table(point, fits, targets, n_boot, alpha), band
