"""qvad: shared library for the Qwen2-Audio speech-detection pipeline.

Stage scripts under ``stages/`` read params, call into this package and write
their outputs; everything that two stages need lives here.
"""

SAMPLE_RATE = 16_000
"""Every decoded clip is 16 kHz mono float32: Qwen2-Audio's feature extractor rate."""
