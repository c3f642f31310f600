"""Psychometric variants come from test sources only, and each condition does what it says."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qvad.audio.io import write_wav
from qvad.data.signal import power
from qvad.analysis.variants import build_variants, conditions, held_out_segments, pick_bases, reverberate
from tests.helpers import voiced_like

CFG = {"durations_ms": [20, 200, 1000], "snrs_db": [0, 20], "snr_durations_ms": [1000], "noise_types": ["white"],
       "rt60_s": [0.6], "am_cutoff_hz": 2500, "base_ms": 1000}
MIX = {"band_hz": [300, 3400], "container_ms": 2000, "container_noise_rel_db": -40}
NORM = {"method": "peak", "peak_target": 0.9, "headroom_db": 3.0, "rms_dbfs": -20.0}


@pytest.fixture
def segments(tmp_path) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, groups = [], []
    for split in ("train", "dev", "test"):
        for label in ("speech", "nonspeech"):
            for g in range(3):
                group = f"{split}-{label}-{g}"
                path = tmp_path / f"{group}.wav"
                x = voiced_like(1.5, seed=g) if label == "speech" else \
                    np.random.default_rng(g).uniform(-.3, .3, 24_000).astype(np.float32)
                write_wav(path, x)
                rows.append({"seg_id": f"{group}#0", "path": str(path), "label": label, "group": group,
                             "seg_start_s": 0.0, "seg_end_s": 1.5})
                groups.append({"group": group, "kind": "source", "split": split})
    return pd.DataFrame(rows), pd.DataFrame(groups)


def test_only_test_groups_are_used(segments):
    segs, groups = segments
    held_out = held_out_segments(segs, groups)
    assert set(held_out["group"]) == {g for g in groups["group"] if g.startswith("test-")}
    candidates = pick_bases(held_out, per_class=None, min_s=1.0, seed=0)
    assert len(candidates) == 6 and candidates["group"].str.startswith("test-").all()
    bases, table, audio = build_variants(candidates, 2, CFG, MIX, NORM, 0.7, seed=0)
    assert len(bases) == 4
    assert table["group"].str.startswith("test-").all()
    assert len(table) == len(audio) == 4 * len(conditions(CFG))
    assert all(a.size == 32_000 and np.max(np.abs(a)) <= 0.9 for a in audio)


def test_variants_are_deterministic(segments):
    segs, groups = segments
    bases = pick_bases(held_out_segments(segs, groups), 1, 1.0, 0)
    a = build_variants(bases, 1, CFG, MIX, NORM, 0.7, seed=5)[2]
    b = build_variants(bases, 1, CFG, MIX, NORM, 0.7, seed=5)[2]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_reverb_spreads_energy_in_time():
    x = np.zeros(16_000, dtype=np.float32)
    x[100] = 1.0
    y = reverberate(x, 0.6, np.random.default_rng(0))
    tail = power(y[100 + 4800:]) / power(y)  # energy after 300 ms
    assert 0.001 < tail < 0.2


def _speech_with_pause(tmp_path, name: str, pause: tuple[float, float] | None) -> dict:
    x = voiced_like(1.5, seed=7)
    if pause:
        x[int(pause[0] * 16_000):int(pause[1] * 16_000)] = 0.0
    path = tmp_path / f"{name}.wav"
    write_wav(path, x)
    return {"seg_id": f"{name}#0", "path": str(path), "label": "speech", "group": name,
            "seg_start_s": 0.0, "seg_end_s": 1.5}


def test_speech_base_with_silent_centre_is_replaced(tmp_path):
    """Every 1 s window of the first segment has its centre in a pause: its 20 ms cut would be silence."""
    paused = _speech_with_pause(tmp_path, "paused", (0.45, 1.05))
    clean = _speech_with_pause(tmp_path, "clean", None)
    bases, table, _ = build_variants(pd.DataFrame([paused, clean]), 1, CFG, MIX, NORM, 0.7, seed=0)
    assert list(bases["seg_id"]) == ["clean#0"]
    assert (table["voiced_frac"] >= 0.7).all()
    bases, table, audio = build_variants(pd.DataFrame([paused]), 1, CFG, MIX, NORM, 0.7, seed=0)
    assert bases.empty and table.empty and audio == []
