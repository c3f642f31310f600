"""Shared fixtures: a seeded generator and the tiny models, built once per test session.

Plain helpers (synthetic audio, model builders, pipeline copies) live in tests/helpers.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import TINY_SEED, build_model_dir


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen2-Audio checkpoint (qvad.model.presets.tiny) for seed :data:`TINY_SEED`; read-only."""
    from qvad.model.presets.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", seed=TINY_SEED)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained-model folder (models/{base,adapter,detector.json}) with an untrained adapter; read-only."""
    return build_model_dir(tmp_path_factory.mktemp("detector"))
