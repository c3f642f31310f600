"""Leakage audit: every way a test clip could have been heard in training, checked.

Each check returns the offending keys, so the report names what leaked, not just that
something did. The audit stage exits non-zero on any finding, which stops `dvc repro`
before training.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from qvad import SAMPLE_RATE


def envelope_fingerprint(x: np.ndarray) -> str:
    """Gain-invariant fingerprint: the 20 ms RMS envelope in 2 dB steps, hashed.

    Catches the same recording saved again at another level or under another name,
    which an md5 of the samples misses.
    """
    hop = SAMPLE_RATE // 50
    n = x.size // hop
    if n == 0:
        return hashlib.md5(x.tobytes()).hexdigest()
    rms = np.sqrt(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1)) + 1e-9
    steps = np.clip(np.round(20 * np.log10(rms / rms.max()) / 2), -40, 0).astype(np.int8)
    return hashlib.md5(steps.tobytes()).hexdigest()


def shared_across_splits(clips: pd.DataFrame, column: str) -> list[str]:
    """Values of ``column`` that occur in more than one split."""
    vals = clips[clips[column].astype(str) != ""]
    n = vals.groupby(column)["split"].nunique()
    return sorted(map(str, n[n > 1].index))


def cells_below(test: pd.DataFrame, design: dict, minimum: int) -> list[str]:
    """Design cells with fewer than ``minimum`` test clips (absent cells included)."""
    counts = test.groupby(["label", "duration_ms", "snr_db"]).size()
    return [f"{lab}/{d}ms/{s}dB={int(counts.get((lab, d, s), 0))}"
            for lab in ("speech", "nonspeech") for d in design["durations_ms"] for s in design["snrs_db"]
            if counts.get((lab, d, s), 0) < minimum]


def under_voiced(clips: pd.DataFrame, min_voiced: float) -> list[str]:
    """Speech clips whose cut has fewer voiced 10 ms frames than the floor: speech in name only."""
    speech = clips[clips["label"] == "speech"]
    return sorted(speech.loc[speech["voiced_frac"].astype(float) < min_voiced, "clip_id"].astype(str))


def run_audit(clips: pd.DataFrame, design: dict, min_per_cell: int, max_imbalance: float,
              min_voiced: float) -> dict:
    """All checks on the union of the splits; ``findings`` is empty when nothing leaked."""
    ambience = clips[clips["noise_type"] == "ambience"]
    checks = {
        "source_group": shared_across_splits(clips, "group"),
        "source_file": shared_across_splits(clips, "source_id"),
        "source_audio_md5": shared_across_splits(clips, "audio_md5"),
        "source_fingerprint": shared_across_splits(clips, "fingerprint"),
        "noise_source": shared_across_splits(ambience, "noise_id"),
        "noise_group": shared_across_splits(ambience, "noise_group"),
    }
    share = clips.groupby("split")["label"].apply(lambda s: float((s == "speech").mean()))
    imbalance = {s: round(v, 4) for s, v in share.items() if abs(v - 0.5) > max_imbalance}
    thin = cells_below(clips[clips["split"] == "test"], design, min_per_cell)
    findings = [f"{kind}: {len(keys)} shared across splits, e.g. {keys[:3]}" for kind, keys in checks.items() if keys]
    if imbalance:
        findings.append(f"class balance: speech share {imbalance} exceeds 0.5 +/- {max_imbalance}")
    if thin:
        findings.append(f"test cells below {min_per_cell} clips: {len(thin)}, e.g. {thin[:4]}")
    quiet = under_voiced(clips, min_voiced)
    if quiet:
        findings.append(f"speech clips below the voicing floor {min_voiced}: {len(quiet)}, e.g. {quiet[:3]}")
    return {
        "passed": not findings,
        "findings": findings,
        "overlaps": {kind: len(keys) for kind, keys in checks.items()},
        "clips_per_split": {s: int(n) for s, n in clips["split"].value_counts().sort_index().items()},
        "groups_per_split": {f"{s}/{lab}": int(n) for (s, lab), n in
                             clips.groupby(["split", "label"])["group"].nunique().items()},
        "speech_share_per_split": {s: round(v, 4) for s, v in share.items()},
        "test_cells_below_min": len(thin),
        "speech_clips_below_voicing_floor": len(quiet),
        "test_clips_per_cell_min": int(clips[clips["split"] == "test"].groupby(
            ["label", "duration_ms", "snr_db"]).size().min()) if (clips["split"] == "test").any() else 0,
    }
