"""Group-bootstrap confidence intervals.

Why groups matter: the test set holds many clips cut from the same speaker or
the same non-speech source. Clips of one group share voice, language, recording
chain and content, so their errors are correlated; treating ~1,500 clips as
independent would give confidence intervals that are too narrow. Every interval
here therefore resamples whole source groups.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from qvad.analysis.validation import as_binary, check_same_length

Metric = Callable[[np.ndarray, np.ndarray, np.ndarray], float]
"""``metric(y_true, y_pred, sample_weight) -> float``; ``y_pred`` may be scores."""

@dataclass(frozen=True)
class BootstrapCI:
    """A point estimate with its group-bootstrap percentile interval.

    ``n_undefined`` counts resamples where the metric was not finite (for example a
    confidence gap on a resample without errors); the interval uses the others.
    """

    estimate: float
    low: float
    high: float
    alpha: float
    n_boot: int
    n_groups: int
    n_undefined: int

    def to_dict(self) -> dict[str, float | int]:
        """Plain dict for JSON metrics files."""
        return asdict(self)


def stratified_group_resample(
    y_true: object, groups: object, n_boot: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n_boot`` bootstrap resamples of whole source groups, stratified by class.

    Groups are resampled (not clips) because clips of one speaker or source are
    correlated. Groups are first split into strata by the labels they contain
    (non-speech only, speech only, mixed); each stratum is resampled with
    replacement to its own size. Since groups here are single-class, this keeps
    the number of speech and non-speech groups fixed, so every resample contains
    both classes and balanced accuracy is always defined -- no resample has to be
    discarded, which would bias the interval.

    Returns ``(group_index, counts)``: ``group_index[i]`` is the position of clip
    ``i``'s group in the sorted unique groups, and ``counts[b, g]`` how many times
    group ``g`` was drawn in resample ``b``. Clip weights for resample ``b`` are
    ``counts[b, group_index]``. Deterministic for a given ``seed`` and independent
    of row order.
    """
    yt = as_binary(y_true, "y_true")
    groups_arr = np.asarray(groups)
    check_same_length(y_true=yt, groups=groups_arr)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    _, group_index = np.unique(groups_arr, return_inverse=True)
    n_groups = int(group_index.max()) + 1
    has_speech = np.bincount(group_index, weights=yt, minlength=n_groups) > 0
    has_nonspeech = np.bincount(group_index, weights=1 - yt, minlength=n_groups) > 0
    stratum = has_speech * 2 + has_nonspeech
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_boot, n_groups), dtype=np.int64)
    for s in np.unique(stratum):
        members = np.flatnonzero(stratum == s)
        counts[:, members] = _multinomial_counts(rng, n_boot, len(members))
    return group_index, counts


def _multinomial_counts(rng: np.random.Generator, n_boot: int, m: int) -> np.ndarray:
    """``(n_boot, m)`` counts of ``m`` draws with replacement from ``m`` items, per row."""
    draws = rng.integers(0, m, size=(n_boot, m)) + (np.arange(n_boot) * m)[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * m).reshape(n_boot, m)


def group_bootstrap_ci(
    metric_fn: Metric,
    y_true: object,
    y_pred: object,
    groups: object,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> BootstrapCI:
    """Percentile ``1 - alpha`` interval of ``metric_fn`` from a class-stratified group bootstrap.

    ``metric_fn(y_true, y_pred, sample_weight)`` is evaluated on the full data
    (the estimate) and on ``n_boot`` resamples of source groups (see
    :func:`stratified_group_resample` for why groups, and why stratified).
    ``y_pred`` is passed through unchanged, so it may hold scores or several
    columns (e.g. two systems' predictions for a paired difference). Resamples are
    expressed as clip weights, so the data are never copied.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    yt = as_binary(y_true, "y_true")
    yp = np.asarray(y_pred)
    check_same_length(y_true=yt, y_pred=yp)
    group_index, counts = stratified_group_resample(yt, groups, n_boot, seed)
    estimate = float(metric_fn(yt, yp, np.ones(len(yt))))
    boot = np.array([metric_fn(yt, yp, row[group_index].astype(float)) for row in counts], dtype=float)
    finite = boot[np.isfinite(boot)]
    low, high = (
        np.quantile(finite, [alpha / 2, 1 - alpha / 2]) if finite.size else (np.nan, np.nan)
    )
    return BootstrapCI(
        estimate=estimate,
        low=float(low),
        high=float(high),
        alpha=alpha,
        n_boot=n_boot,
        n_groups=counts.shape[1],
        n_undefined=int(n_boot - finite.size),
    )
