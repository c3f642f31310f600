"""Scores a fixed set of clips with the tiny model in however many processes launched it.

Run by tests/test_data_parallel.py as a stage is run (``python -m qvad.parallel.launch
tests.data_parallel_probe`` in a project whose models/base holds the tiny preset). Every process
saves what it got back from the shared scorer, as ``scores-<rank>.npz``, so the test can check
that each has all the clips, in order, bit for bit as one process scores them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qvad.common.cpu_numerics import pin_cpu_numerics
from qvad.common.params import get, load_params
from qvad.model.store import load_trained
from qvad.parallel.group import join_group
from qvad.parallel.scoring import score_ab, score_ab_logits

CLIPS = 11
BATCH = 2  # 6 batches, the last one short: 3 for each of two processes


def clips() -> list[np.ndarray]:
    """Clips of several lengths in no particular order, so the scorer's length sort must be undone."""
    rng = np.random.default_rng(7)
    return [(0.1 * rng.standard_normal(int(16_000 * s))).astype(np.float32)
            for s in rng.choice([0.2, 0.35, 0.5, 0.8], size=CLIPS)]


if __name__ == "__main__":
    params = load_params()
    pin_cpu_numerics(params["cpu_threads"])
    group = join_group(params, "cpu")
    model, processor = load_trained(get(params, "model"), adapter=None, base=Path("models/base"), dev="cpu")
    audio = clips()
    logits = score_ab_logits(model, processor, audio, get(params, "prompt"), BATCH)
    p_speech = score_ab(model, processor, audio, get(params, "prompt"), BATCH)
    np.savez(f"scores-{group.rank}-of-{group.size}.npz", logits=logits, p_speech=p_speech)
