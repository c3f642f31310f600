"""The package's public surface: ``from qvad import Detector`` works, and ``import qvad`` stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules_after(code: str) -> set[str]:
    """Top-level modules loaded by ``code`` in a fresh interpreter (this one has torch loaded already)."""
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {name.split(".")[0] for name in out.split()}


def test_import_qvad_loads_neither_torch_nor_the_detector() -> None:
    loaded = _modules_after("import qvad\nassert qvad.SAMPLE_RATE == 16_000")
    assert "qvad" in loaded
    assert not loaded & {"torch", "transformers", "numpy", "soundfile"}, loaded


def test_detector_is_exported_lazily() -> None:
    import qvad
    from qvad.detector import Detector

    assert qvad.Detector is Detector
    assert "Detector" in qvad.__all__
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        qvad.Nope  # noqa: B018
    loaded = _modules_after("from qvad import Detector\nassert Detector.__module__ == 'qvad.detector'")
    assert "numpy" in loaded  # the detector's own imports ran on demand
