"""The search's objective: clip balanced accuracy plus a bonus for doing well in every condition.

Plain accuracy over all clips lets a prompt win on the easy, plentiful clean/long clips while
failing the short or noisy cells the study cares about; adding the mean balanced accuracy over
condition cells (the study's reward, weight 0.25) rewards prompts that hold up across the grid.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import balanced_accuracy_score

DEFAULT_CONDITION_WEIGHT = 0.25
THRESHOLD = 0.5
"""P(speech) at or above this is a 'speech' decision: the A-vs-B argmax the model answers with."""


@dataclass(frozen=True)
class Reward:
    """One prompt's score on one clip set; ``value`` is what the search maximises."""

    value: float
    balanced_accuracy: float
    condition_balanced_accuracy: float
    n_clips: int


def _balanced_accuracy(labels: np.ndarray, decisions: np.ndarray) -> float:
    """sklearn's balanced accuracy; a one-class cell scores its recall instead of warning.

    A condition cell (or a tiny mini-dev stratum) can hold a single class; sklearn then
    averages the recalls of the classes present, which is the right value, but warns each time.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(labels, decisions))


def compute_reward(
    labels: Sequence[int] | np.ndarray,
    p_speech: Sequence[float] | np.ndarray,
    conditions: Sequence[Hashable],
    condition_weight: float = DEFAULT_CONDITION_WEIGHT,
) -> Reward:
    """Reward = clip balanced accuracy + ``condition_weight`` x mean balanced accuracy over conditions.

    ``labels`` are 1 for speech and 0 for non-speech; ``conditions`` give each clip's cell
    (e.g. a duration or SNR level); every cell counts equally, whatever its size.
    """
    y = np.asarray(labels, dtype=int)
    decisions = (np.asarray(p_speech, dtype=float) >= THRESHOLD).astype(int)
    keys = list(conditions)
    if not (len(y) == len(decisions) == len(keys)) or len(y) == 0:
        raise ValueError(
            f"reward needs equal, non-empty lengths: {len(y)} labels, {len(decisions)} scores, {len(keys)} conditions"
        )
    clip_ba = _balanced_accuracy(y, decisions)
    cells: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        cells.setdefault(key, []).append(index)
    cell_ba = float(np.mean([_balanced_accuracy(y[idx], decisions[idx]) for idx in cells.values()]))
    return Reward(
        value=clip_ba + condition_weight * cell_ba,
        balanced_accuracy=clip_ba,
        condition_balanced_accuracy=cell_ba,
        n_clips=len(y),
    )
