"""qvad: shared library for the Qwen2-Audio speech-detection pipeline.

Stage scripts under ``stages/`` read params, call into this package and write
their outputs; everything that two stages need lives here. Users of the trained
detector need only ``from qvad import Detector``.
"""

import logging as _logging
from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from qvad.detector import Detector

# bitsandbytes (imported by peft whenever it is installed) logs "Failed to load CPU
# gemm_4bit_forward from kernels-community" on AVX512-BF16 CPUs: an optional hub kernel that only
# speeds up 4-bit inference on the CPU, and unreachable offline. Nothing here uses it.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)

SAMPLE_RATE = 16_000
"""Every decoded clip is 16 kHz mono float32: Qwen2-Audio's feature extractor rate."""

__all__ = ["SAMPLE_RATE", "Detector"]


def __getattr__(name: str) -> object:
    """``qvad.Detector`` imported on first use (PEP 562), so ``import qvad`` stays light: every
    stage imports this package, and most of them never need the detector's audio stack."""
    if name == "Detector":
        from qvad.detector import Detector

        return Detector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
