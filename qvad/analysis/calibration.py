"""Calibration of P(speech): answer margin, temperature scaling, reliability and ECE."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, special

from qvad.analysis.validation import as_binary, as_probabilities, check_same_length

def speech_margin(logits: object) -> np.ndarray:
    """Log-odds of "speech": a 1-D margin as is, or ``logits[:, 0] - logits[:, 1]`` for ``(n, 2)``.

    ``(n, 2)`` logits follow the scorer's convention (qvad.model.scoring): column 0 is answer
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
    y = as_binary(labels, "labels")
    check_same_length(logits=margin, labels=y)
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
    p = as_probabilities(p_speech, "p_speech")
    y = as_binary(labels, "labels")
    check_same_length(p_speech=p, labels=y)
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
