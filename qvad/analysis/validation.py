"""Input checks shared by the metric modules: 0/1 labels, probabilities, weights.

Every metric fails loudly on a bad array (wrong values, NaN, mismatched lengths) instead of
returning a plausible number; the checks live here so each metric module does one job.
"""

from __future__ import annotations

import numpy as np

def as_binary(values: object, name: str) -> np.ndarray:
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


def as_probabilities(values: object, name: str) -> np.ndarray:
    """``values`` as a non-empty 1-D float array within [0, 1], or a ValueError."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not (np.isfinite(arr).all() and (arr >= 0).all() and (arr <= 1).all()):
        raise ValueError(f"{name} must be finite probabilities in [0, 1]")
    return arr


def as_weights(sample_weight: object | None, n: int) -> np.ndarray:
    """Sample weights (ones when None) of length ``n``, finite and non-negative."""
    if sample_weight is None:
        return np.ones(n)
    w = np.asarray(sample_weight, dtype=float)
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), got {w.shape}")
    if not (np.isfinite(w).all() and (w >= 0).all()):
        raise ValueError("sample_weight must be finite and non-negative")
    return w


def check_same_length(**arrays: np.ndarray) -> None:
    """Raise a ValueError listing the lengths when the arrays disagree."""
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"length mismatch: {lengths}")
