"""Shared fixtures: tiny synthetic audio written by the tests themselves."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def voiced_like(seconds: float, sr: int = 16_000, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """A vowel-like harmonic signal with syllable-rate amplitude modulation (WebRTC calls it voiced)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.28)) / k for k in range(1, 25))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    return (0.3 * x * envelope / np.max(np.abs(x))).astype(np.float32)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
