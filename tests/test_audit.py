"""Planted leaks: the audit must fail for each kind, naming it."""

from __future__ import annotations

import pandas as pd
import pytest

from qvad.data.leakage import envelope_fingerprint, run_audit
from tests.helpers import voiced_like

DESIGN = {"durations_ms": [200], "snrs_db": [0]}


def clean_clips() -> pd.DataFrame:
    rows = []
    for split in ("train", "dev", "test"):
        for label in ("speech", "nonspeech"):
            for k in range(3):
                key = f"{split}-{label}-{k}"
                rows.append({"clip_id": key, "split": split, "label": label, "group": f"g-{key}",
                             "source_id": f"src-{key}", "audio_md5": f"md5-{key}", "fingerprint": f"fp-{key}",
                             "noise_type": "ambience", "noise_id": f"n-{split}-{k}", "noise_group": f"ng-{split}",
                             "duration_ms": 200, "snr_db": 0, "voiced_frac": 0.9 if label == "speech" else 0.0})
    return pd.DataFrame(rows)


def audit(clips: pd.DataFrame) -> dict:
    return run_audit(clips, DESIGN, min_per_cell=3, max_imbalance=0.15, min_voiced=0.7)


def test_clean_splits_pass():
    report = audit(clean_clips())
    assert report["passed"] and not report["findings"] and set(report["overlaps"].values()) == {0}


@pytest.mark.parametrize("column, kind", [
    ("group", "source_group"),           # a speaker in train and test
    ("source_id", "source_file"),        # one source file cut into clips of two splits
    ("audio_md5", "source_audio_md5"),   # the same audio under another name
    ("fingerprint", "source_fingerprint"),  # the same recording at another gain
    ("noise_id", "noise_source"),        # a test noise recording heard in training
    ("noise_group", "noise_group"),
])
def test_each_planted_leak_fails_and_is_named(column, kind):
    clips = clean_clips()
    test_row = clips.index[clips["split"] == "test"][0]
    clips.loc[test_row, column] = clips.loc[clips.index[clips["split"] == "train"][0], column]
    report = audit(clips)
    assert not report["passed"]
    assert report["overlaps"][kind] == 1
    assert any(f.startswith(kind + ":") for f in report["findings"])


def test_thin_test_cell_and_imbalance_fail():
    clips = clean_clips()
    clips = clips.drop(clips.index[(clips["split"] == "test") & (clips["label"] == "speech")][:1])
    report = audit(clips)
    assert any("test cells below 3" in f for f in report["findings"])
    clips = clean_clips()
    clips = clips.drop(clips.index[(clips["split"] == "dev") & (clips["label"] == "speech")][:2])
    assert any("class balance" in f for f in audit(clips)["findings"])


def test_fingerprint_ignores_gain_but_not_content():
    x = voiced_like(1.0)
    assert envelope_fingerprint(x) == envelope_fingerprint(0.5 * x)
    assert envelope_fingerprint(x) != envelope_fingerprint(voiced_like(1.0)[::-1].copy())


def test_under_voiced_speech_clip_fails_and_is_named():
    """A speech clip whose cut fell in a pause is named; non-speech clips have no voicing floor."""
    clips = clean_clips()
    clips.loc[clips["clip_id"] == "test-speech-1", "voiced_frac"] = 0.4
    report = audit(clips)
    assert not report["passed"] and report["speech_clips_below_voicing_floor"] == 1
    assert any("voicing floor" in f and "test-speech-1" in f for f in report["findings"])
