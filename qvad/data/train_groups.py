"""Cap the number of speech source groups (speakers) the model trains on: the data-scale curve.

The knob ``split.max_train_speech_groups`` asks how test accuracy grows with the number of
training speakers. It only thins the training list: dev and test keep every group (the
comparison is on the same clips), and non-speech groups stay as they are.

The kept groups are a prefix of one seeded permutation of the training speech groups, so the
curve's points are nested (the 4 groups of one point are among the 8 of the next) and its steps
add speakers rather than swap them. Dropping speech groups would also tilt the class balance the
model learns its prior from (4 of 27 groups leave ~15 % of the speech clips): the kept speech
clips are repeated, whole passes plus a seeded draw for the rest, back to the full split's
speech count. Every point then trains for the same number of steps on the same class balance,
and what changes is the number of distinct speakers and speech clips, which is what the curve
measures (the two cannot be told apart: a speaker brings a fixed number of clips).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from qvad.common.params import require


def cap_speech_groups(train: pd.DataFrame, max_groups: int | None, seed: int) -> pd.DataFrame:
    """``train`` with its speech clips limited to ``max_groups`` groups (None: unchanged).

    Rows keep the split's order; repeated speech rows sit next to their original.
    """
    require(max_groups is None or (isinstance(max_groups, int) and not isinstance(max_groups, bool)
                                   and max_groups > 0),
            "split.max_train_speech_groups", f"must be null or a positive integer, got {max_groups!r}")
    speech = train["label"] == "speech"
    groups = sorted(train.loc[speech, "group"].unique())
    if max_groups is None or max_groups >= len(groups):
        return train
    rng = np.random.default_rng(seed)
    kept = set(np.asarray(groups, dtype=object)[rng.permutation(len(groups))[:max_groups]])
    pool = np.flatnonzero(speech.to_numpy() & train["group"].isin(kept).to_numpy())
    passes, rest = divmod(int(speech.sum()), len(pool))
    speech_rows = np.concatenate([np.tile(pool, passes), rng.choice(pool, rest, replace=False)])
    rows = np.sort(np.concatenate([np.flatnonzero(~speech.to_numpy()), speech_rows]), kind="stable")
    return train.iloc[rows].reset_index(drop=True)
