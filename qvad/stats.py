"""Evaluation statistics for the speech / non-speech detector.

Conventions used throughout: label 1 = speech, 0 = non-speech; a prediction is
the model's yes (1) / no (0) answer; ``p_speech`` is the model's probability of
"yes". All metrics accept an optional ``sample_weight`` so that the group
bootstrap can re-weight clips instead of copying arrays (a resampled data set is
the original clips weighted by how often their group was drawn).

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
import pandas as pd
from scipy import optimize, special, stats

Metric = Callable[[np.ndarray, np.ndarray, np.ndarray], float]
"""``metric(y_true, y_pred, sample_weight) -> float``; ``y_pred`` may be scores."""

# --------------------------------------------------------------------------- validation


def _binary(values: object, name: str) -> np.ndarray:
    """``values`` as a non-empty 1-D int array of 0/1, or a ValueError naming ``name``."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isin(arr, (0, 1)).all():
        bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5]
        raise ValueError(f"{name} must contain only 0 and 1, found {bad.tolist()}")
    return arr.astype(np.int64)


def _probabilities(values: object, name: str) -> np.ndarray:
    """``values`` as a non-empty 1-D float array within [0, 1], or a ValueError."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not (np.isfinite(arr).all() and (arr >= 0).all() and (arr <= 1).all()):
        raise ValueError(f"{name} must be finite probabilities in [0, 1]")
    return arr


def _weights(sample_weight: object | None, n: int) -> np.ndarray:
    """Sample weights (ones when None) of length ``n``, finite and non-negative."""
    if sample_weight is None:
        return np.ones(n)
    w = np.asarray(sample_weight, dtype=float)
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), got {w.shape}")
    if not (np.isfinite(w).all() and (w >= 0).all()):
        raise ValueError("sample_weight must be finite and non-negative")
    return w


def _same_length(**arrays: np.ndarray) -> None:
    """Raise a ValueError listing the lengths when the arrays disagree."""
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"length mismatch: {lengths}")


# --------------------------------------------------------------------------- point metrics


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
    yt, yp = _binary(y_true, "y_true"), _binary(y_pred, "y_pred")
    _same_length(y_true=yt, y_pred=yp)
    w = _weights(sample_weight, len(yt))
    if w.sum() <= 0:
        raise ValueError("sample_weight sums to zero")
    return float(((yt == yp) * w).sum() / w.sum())


def per_class_recall(y_true: object, y_pred: object, sample_weight: object | None = None) -> dict[str, float]:
    """Recall per class: ``speech`` = hit rate (sensitivity), ``nonspeech`` = specificity.

    A class absent from ``y_true`` gets NaN: its recall is undefined, not zero.
    """
    yt, yp = _binary(y_true, "y_true"), _binary(y_pred, "y_pred")
    _same_length(y_true=yt, y_pred=yp)
    r0, r1 = _class_recalls(yt, yp, _weights(sample_weight, len(yt)))
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


# --------------------------------------------------------------------------- group bootstrap


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
    yt = _binary(y_true, "y_true")
    groups_arr = np.asarray(groups)
    _same_length(y_true=yt, groups=groups_arr)
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
    yt = _binary(y_true, "y_true")
    yp = np.asarray(y_pred)
    _same_length(y_true=yt, y_pred=yp)
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


# --------------------------------------------------------------------------- paired test


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
    a = _binary(correct_a, "correct_a").astype(bool)
    b_arr = _binary(correct_b, "correct_b").astype(bool)
    _same_length(correct_a=a, correct_b=b_arr)
    b = int((a & ~b_arr).sum())
    c = int((~a & b_arr).sum())
    p_value = stats.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue if b + c else 1.0
    return {"b": b, "c": c, "n_discordant": b + c, "statistic": min(b, c), "p_value": float(p_value)}


# --------------------------------------------------------------------------- calibration


def speech_margin(logits: object) -> np.ndarray:
    """Log-odds of "speech": a 1-D margin as is, or ``logits[:, 0] - logits[:, 1]`` for ``(n, 2)``.

    ``(n, 2)`` logits follow the scorer's convention (qvad.scoring): column 0 is answer
    'A' = SPEECH, column 1 is 'B' = NONSPEECH. The two-answer softmax depends only on this difference, so temperature
    scaling of the two logits is temperature scaling of the margin.
    """
    arr = np.asarray(logits, dtype=float)
    if arr.ndim == 2 and arr.shape[1] == 2:
        arr = arr[:, 0] - arr[:, 1]
    elif arr.ndim != 1:
        raise ValueError(f"logits must be 1-D margins or shape (n, 2), got {arr.shape}")
    if arr.size == 0:
        raise ValueError("logits is empty")
    if not np.isfinite(arr).all():
        raise ValueError("logits contain NaN or inf")
    return arr


def _temperature_nll(inv_t: float, margin: np.ndarray, sign: np.ndarray) -> float:
    """Mean binary NLL of ``sigmoid(margin * inv_t)``, computed stably via logaddexp."""
    return float(np.logaddexp(0.0, -sign * margin * inv_t).mean())


def fit_temperature(
    logits: object, labels: object, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """Temperature ``T`` minimising the NLL of ``sigmoid(margin / T)`` on DEV data.

    Fit on dev, never on test, so test calibration numbers stay honest. The NLL is
    convex in ``1/T`` (a one-feature logistic regression without intercept), so a
    bounded scalar search over ``1/T`` finds the global optimum. A result at a
    bound signals degenerate dev data (e.g. perfectly separated -> T at the lower
    bound) and should be inspected, not trusted.
    """
    margin = speech_margin(logits)
    y = _binary(labels, "labels")
    _same_length(logits=margin, labels=y)
    t_lo, t_hi = bounds
    if not 0 < t_lo < t_hi:
        raise ValueError(f"temperature bounds must satisfy 0 < low < high, got {bounds}")
    sign = 2.0 * y - 1.0
    res = optimize.minimize_scalar(
        _temperature_nll,
        bounds=(1.0 / t_hi, 1.0 / t_lo),
        args=(margin, sign),
        method="bounded",
        options={"xatol": 1e-8},
    )
    return float(1.0 / res.x)


def apply_temperature(logits: object, temperature: float) -> np.ndarray:
    """Calibrated ``p_speech = sigmoid(margin / T)``."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return special.expit(speech_margin(logits) / temperature)


def _confidence_and_correct(p_speech: object, labels: object) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidence ``max(p, 1 - p)`` and correctness of ``p >= 0.5`` as "speech"."""
    p = _probabilities(p_speech, "p_speech")
    y = _binary(labels, "labels")
    _same_length(p_speech=p, labels=y)
    pred = (p >= 0.5).astype(np.int64)
    return np.maximum(p, 1.0 - p), (pred == y).astype(float)


def reliability_table(p_speech: object, labels: object, n_bins: int = 15) -> pd.DataFrame:
    """Per-bin mean confidence, accuracy and count of the predicted class, for reliability plots.

    Confidence is that of the predicted class, ``max(p, 1 - p)``, which for a
    binary task lies in [0.5, 1]; the ``n_bins`` equal-width bins therefore span
    [0.5, 1] (bins over [0, 1] would leave half of them empty by construction).
    Bins are right-closed, the first also holds 0.5. Empty bins have count 0 and
    NaN confidence / accuracy.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf, correct = _confidence_and_correct(p_speech, labels)
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    bin_idx = np.digitize(conf, edges[1:-1], right=True)
    count = np.bincount(bin_idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bin_idx, weights=conf, minlength=n_bins) / count
        mean_acc = np.bincount(bin_idx, weights=correct, minlength=n_bins) / count
    return pd.DataFrame(
        {
            "bin_lower": edges[:-1],
            "bin_upper": edges[1:],
            "count": count,
            "confidence": mean_conf,
            "accuracy": mean_acc,
        }
    )


def expected_calibration_error(p_speech: object, labels: object, n_bins: int = 15) -> float:
    """ECE = sum over bins of ``(n_bin / N) * |accuracy_bin - confidence_bin|``.

    Confidence and bins as in :func:`reliability_table` (top-label confidence,
    equal-width bins on [0.5, 1]). 0 means confidence matches accuracy; note the
    value depends on ``n_bins`` and is biased upwards for small N, so compare ECEs
    only at equal N and bins.
    """
    table = reliability_table(p_speech, labels, n_bins).query("count > 0")
    gaps = (table["accuracy"] - table["confidence"]).abs()
    return float((table["count"] * gaps).sum() / table["count"].sum())


def confidence_gap(p_speech: object, labels: object) -> dict[str, float | int]:
    """Mean top-label confidence on correct vs wrong answers, and their difference.

    A useful detector is less sure when it is wrong; a gap near 0 means its
    confidence carries no information about its errors. Means over an empty set
    (no errors, or no correct answers) are NaN.
    """
    conf, correct = _confidence_and_correct(p_speech, labels)
    right, wrong = conf[correct == 1], conf[correct == 0]
    mean_right = float(right.mean()) if right.size else np.nan
    mean_wrong = float(wrong.mean()) if wrong.size else np.nan
    return {
        "mean_conf_correct": mean_right,
        "mean_conf_wrong": mean_wrong,
        "gap": mean_right - mean_wrong,
        "n_correct": int(right.size),
        "n_wrong": int(wrong.size),
    }


# --------------------------------------------------------------------------- breakdowns


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
