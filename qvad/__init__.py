"""qvad: shared library for the Qwen2-Audio speech-detection pipeline.

Stage scripts under ``stages/`` read params, call into this package and write
their outputs; everything that two stages need lives here.
"""

import logging as _logging

# bitsandbytes (imported by peft whenever it is installed) logs "Failed to load CPU
# gemm_4bit_forward from kernels-community" on AVX512-BF16 CPUs: an optional hub kernel that only
# speeds up 4-bit inference on the CPU, and unreachable offline. Nothing here uses it.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)

SAMPLE_RATE = 16_000
"""Every decoded clip is 16 kHz mono float32: Qwen2-Audio's feature extractor rate."""
