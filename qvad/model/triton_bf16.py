"""Triton (where torch ships it: CUDA builds) and the bfloat16 rounding that makes fused kernels exact.

A fused kernel computes in float32 what the stock kernels compute one by one, each storing a
bfloat16 result. Rounding every intermediate to bfloat16 the way they store it (round to nearest,
ties to even) gives their result bit for bit; integer operations do it so that the compiler can
neither drop the rounding nor contract a multiply-add across it.
"""

from __future__ import annotations

try:  # CPU builds of torch have no Triton; callers then keep the stock expression
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None

if triton is not None:

    @triton.jit
    def round_bf16(x):
        """float32 -> nearest bfloat16 (ties to even), kept in float32; NaN stays NaN (the GPU's
        NaN, 0x7FFFFFFF, would otherwise carry into the sign bit and come out as -0.0)."""
        bits = x.to(tl.uint32, bitcast=True)
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        return tl.where(x != x, x, bits.to(tl.float32, bitcast=True))
