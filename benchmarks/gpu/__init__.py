"""Parts of ``benchmarks/gpu_throughput.py``: common helpers, inference, training, profile, report.

Importing this package makes ``qvad.audio.io`` importable on boxes without WAV I/O: the GPU box has
neither soundfile nor soxr, which ``qvad.model.trainer``'s dataset module imports (no WAV is read
here; every clip is synthetic).
"""

from __future__ import annotations

import sys
import types


def _stub_wav_io(reason: str) -> None:
    """Stand in for ``qvad.audio.io``: its ``read_wav`` raises, with ``reason`` in the message."""
    stub = types.ModuleType("qvad.audio.io")

    def read_wav(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError(f"WAV I/O unavailable here ({reason}); the benchmark uses synthetic clips")

    stub.read_wav = read_wav
    sys.modules["qvad.audio.io"] = stub


try:
    import qvad.audio.io  # noqa: F401
except (ImportError, OSError) as exc:  # OSError: soundfile installed but libsndfile missing
    _stub_wav_io(f"{type(exc).__name__}: {exc}")
