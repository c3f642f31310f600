"""Label hygiene: speech keeps only densely voiced regions; non-speech with voice is rejected.

Why: a speech prompt has leading/trailing silence and pauses, and a "sound effect" can
hold a shout. Clips cut from such material would carry wrong labels, and the model
would be scored against them.
"""

from __future__ import annotations

import numpy as np


def voiced_runs(voiced: np.ndarray) -> list[tuple[int, int]]:
    """Half-open frame index runs ``[start, end)`` of consecutive voiced frames."""
    padded = np.concatenate([[False], voiced.astype(bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def speech_regions(voiced: np.ndarray, min_frac: float, min_frames: int) -> list[tuple[int, int, float]]:
    """Regions ``(start, end, voiced_fraction)`` whose voiced fraction is >= ``min_frac``.

    Voiced runs are merged left to right across gaps as long as the merged region keeps
    at least ``min_frac`` voiced frames, so a region starts and ends on voiced frames
    (leading and trailing silence are cut) and short pauses inside words stay in.
    """
    regions: list[list[int]] = []  # [start, end, voiced_count]
    for start, end in voiced_runs(voiced):
        if regions:
            s, _, count = regions[-1]
            if (count + end - start) / (end - s) >= min_frac:
                regions[-1] = [s, end, count + end - start]
                continue
        regions.append([start, end, end - start])
    return [(s, e, c / (e - s)) for s, e, c in regions if e - s >= min_frames]
