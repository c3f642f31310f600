"""The data-scale knob: a seeded, nested cap on training speech groups that keeps the class balance."""

from __future__ import annotations

import pandas as pd
import pytest

from qvad.common.params import ParamsError
from qvad.data.train_groups import cap_speech_groups


def train_list() -> pd.DataFrame:
    """10 speech groups of uneven size (3..12 clips) and 4 non-speech groups of 15 clips."""
    rows = [{"clip_id": f"s{g}_{i}", "label": "speech", "group": f"spk{g}"} for g in range(10) for i in range(3 + g)]
    rows += [{"clip_id": f"n{g}_{i}", "label": "nonspeech", "group": f"src{g}"} for g in range(4) for i in range(15)]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)


def speech_groups(df: pd.DataFrame) -> set[str]:
    return set(df.loc[df["label"] == "speech", "group"])


def test_null_and_a_cap_above_the_groups_leave_the_list_as_it_is():
    train = train_list()
    assert cap_speech_groups(train, None, 1) is train
    assert cap_speech_groups(train, 10, 1) is train


def test_cap_keeps_n_groups_nonspeech_untouched_and_the_speech_count():
    train = train_list()
    out = cap_speech_groups(train, 3, 7)
    assert len(speech_groups(out)) == 3
    pd.testing.assert_frame_equal(out[out["label"] == "nonspeech"].reset_index(drop=True),
                                  train[train["label"] == "nonspeech"].reset_index(drop=True))
    assert (out["label"] == "speech").sum() == (train["label"] == "speech").sum()
    # repeats are balanced: no clip appears more than once above another of its pool
    counts = out.loc[out["label"] == "speech", "clip_id"].value_counts()
    assert counts.max() - counts.min() <= 1


def test_caps_are_nested_and_seeded():
    train = train_list()
    small, large = (speech_groups(cap_speech_groups(train, n, 3)) for n in (2, 6))
    assert small < large
    assert speech_groups(cap_speech_groups(train, 4, 3)) == speech_groups(cap_speech_groups(train, 4, 3))
    assert len({frozenset(speech_groups(cap_speech_groups(train, 4, s))) for s in range(6)}) > 1


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "4"])
def test_bad_cap_names_the_key(bad):
    with pytest.raises(ParamsError, match="split.max_train_speech_groups"):
        cap_speech_groups(train_list(), bad, 0)
