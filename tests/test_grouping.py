"""Tests for qvad.data.grouping: group assignment is stratified, seeded and duplicate-aware."""

from __future__ import annotations

import pandas as pd
import pytest

from qvad.data.grouping import assign_groups, merge_duplicate_groups


def units(n_speech: int = 20, n_non: int = 30) -> pd.DataFrame:
    return pd.DataFrame({"unit": [f"s{i}" for i in range(n_speech)] + [f"n{i}" for i in range(n_non)],
                         "stratum": ["speech"] * n_speech + ["nonspeech"] * n_non})


def test_stable_for_a_seed_and_changes_with_it():
    a, b, c = assign_groups(units(), [0.6, 0.2, 0.2], 1), assign_groups(units(), [0.6, 0.2, 0.2], 1), \
        assign_groups(units(), [0.6, 0.2, 0.2], 2)
    assert a == b and a != c


def test_fractions_per_stratum():
    split = assign_groups(units(), [0.6, 0.2, 0.2], 0)
    for prefix, n in (("s", 20), ("n", 30)):
        got = pd.Series([v for k, v in split.items() if k.startswith(prefix)]).value_counts()
        assert got["test"] == round(0.2 * n) and got["dev"] == round(0.2 * n)


def test_too_few_groups_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 3"):
        assign_groups(units(2, 5), [0.6, 0.2, 0.2], 0)
    with pytest.raises(ValueError, match="sum"):
        assign_groups(units(), [0.5, 0.2, 0.2], 0)


def test_groups_sharing_audio_are_merged():
    seg = pd.DataFrame({"group": ["lang:de", "lang:nl", "lang:fr", "lang:nl"],
                        "audio_md5": ["x", "x", "y", "z"]})
    rep = merge_duplicate_groups(seg)
    assert rep["lang:de"] == rep["lang:nl"] and rep["lang:fr"] == "lang:fr"
