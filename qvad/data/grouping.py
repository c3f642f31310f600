"""Assigning source groups and noise groups to train/dev/test.

Groups (speakers, sound sources, noise sources) are the unit: every clip of a group lands
in one split. Groups that share identical audio (md5 duplicates across languages in
ktuberling, say) are merged first, so a duplicate can never straddle two splits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLITS = ("train", "dev", "test")


def merge_duplicate_groups(segments: pd.DataFrame) -> dict[str, str]:
    """Map each group to a representative; groups linked by a shared ``audio_md5`` share one."""
    parent = {g: g for g in segments["group"].unique()}

    def find(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    for groups in segments.groupby("audio_md5")["group"].unique():
        for other in groups[1:]:
            a, b = find(groups[0]), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {g: find(g) for g in parent}


def assign_groups(units: pd.DataFrame, fractions: list[float], seed: int) -> dict[str, str]:
    """Split units (columns ``unit``, ``stratum``) into SPLITS, stratified by ``stratum``.

    Within each stratum the units are shuffled by ``seed`` and cut at the target
    fractions, so every split gets its share of speakers *and* of sources. A stratum with
    fewer than three units cannot populate three splits and is an error.
    """
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split fractions must be three positive numbers summing to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    out: dict[str, str] = {}
    for stratum, df in sorted(units.groupby("stratum"), key=lambda kv: kv[0]):
        names = sorted(df["unit"].unique())
        if len(names) < 3:
            raise ValueError(f"stratum {stratum!r} has {len(names)} groups; at least 3 are needed to split")
        names = [names[i] for i in rng.permutation(len(names))]
        n_dev = max(1, round(fractions[1] * len(names)))
        n_test = max(1, round(fractions[2] * len(names)))
        n_train = len(names) - n_dev - n_test
        if n_train < 1:
            raise ValueError(f"stratum {stratum!r}: too few groups ({len(names)}) for fractions {fractions}")
        for i, name in enumerate(names):
            out[name] = "train" if i < n_train else "dev" if i < n_train + n_dev else "test"
    return out
