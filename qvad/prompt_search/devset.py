"""The clips a search may score, and the seeded stratified mini-dev drawn from them.

The search sees only this set: test clips never reach the scorer, so the chosen prompt's
test score stays an honest estimate. A mini-dev (the study's template search used 20 clips)
makes each iteration cheap; stratifying it by label, then by condition, keeps both classes
present and spreads the few clips over the degradation grid instead of wherever chance puts them.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DevSet:
    """Dev clips with their labels (1 speech, 0 non-speech) and condition cells, index-aligned."""

    clip_ids: tuple[str, ...]
    labels: np.ndarray
    conditions: tuple[Hashable, ...]

    @classmethod
    def build(cls, clip_ids: Sequence[str], labels: Sequence[int], conditions: Sequence[Hashable]) -> DevSet:
        """Validate and freeze; a mismatch here would silently pair scores with the wrong labels."""
        ids, y, cells = tuple(clip_ids), np.asarray(labels, dtype=int), tuple(conditions)
        if not (len(ids) == len(y) == len(cells)) or not ids:
            raise ValueError(
                f"dev set needs equal, non-empty lengths: {len(ids)} ids, {len(y)} labels, {len(cells)} conditions"
            )
        if len(set(ids)) != len(ids):
            raise ValueError("dev clip ids must be unique")
        if set(np.unique(y)) != {0, 1}:
            raise ValueError(f"dev labels must hold both 0 and 1, got {sorted(set(np.unique(y).tolist()))}")
        y.setflags(write=False)
        return cls(ids, y, cells)

    def __len__(self) -> int:
        return len(self.clip_ids)

    def subset(self, indices: np.ndarray) -> DevSet:
        """The clips at ``indices``, in that order (a subset may hold one class; the reward copes)."""
        return DevSet(
            tuple(self.clip_ids[i] for i in indices), self.labels[indices], tuple(self.conditions[i] for i in indices)
        )


def _allocate(counts: np.ndarray, size: int) -> np.ndarray:
    """Split ``size`` across groups in proportion to ``counts`` (largest remainder), at least 1 each."""
    exact = counts / counts.sum() * size
    share = np.maximum(np.floor(exact).astype(int), 1)
    share = np.minimum(share, counts)
    for group in np.argsort(-(exact - np.floor(exact)), kind="stable"):
        if share.sum() >= size:
            break
        if share[group] < counts[group]:
            share[group] += 1
    return share


def _spread_over_conditions(
    indices: np.ndarray, conditions: Sequence[Hashable], k: int, rng: np.random.Generator
) -> list[int]:
    """Pick ``k`` of ``indices`` round-robin over their condition cells, cells and clips in seeded order."""
    cells: dict[Hashable, list[int]] = {}
    for index in rng.permutation(indices):
        cells.setdefault(conditions[index], []).append(int(index))
    queues = list(cells.values())
    picked: list[int] = []
    while len(picked) < k:
        for queue in queues:
            if queue and len(picked) < k:
                picked.append(queue.pop())
    return picked


def stratified_subsample(dev: DevSet, size: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of a mini-dev of ``size`` clips (all clips when ``size`` is None or not smaller), sorted.

    Labels get proportional shares (at least one clip each); within a label the clips are spread
    round-robin over condition cells. The same Generator state gives the same subsample.
    """
    if size is None or size >= len(dev):
        return np.arange(len(dev))
    if size < 2:
        raise ValueError(f"a mini-dev needs at least 2 clips (one per class), got {size}")
    classes = (0, 1)
    members = [np.flatnonzero(dev.labels == c) for c in classes]
    shares = _allocate(np.array([len(m) for m in members]), size)
    picked = [i for m, k in zip(members, shares) for i in _spread_over_conditions(m, dev.conditions, int(k), rng)]
    return np.sort(np.array(picked, dtype=int))
