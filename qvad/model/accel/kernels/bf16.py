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

    @triton.jit
    def rotate_half_bf16(x1, x2, c1, c2, s1, s2):
        """``x * cos + rotate_half(x) * sin`` on the two halves of a head, as the stock bf16 kernels
        store it: every product and the sum rounded to bfloat16 (float32 in, float32 out).

        ``rotate_half(x)`` is ``(-x2, x1)``, so ``y1 = x1*cos1 + (-x2)*sin1`` and ``y2 = x2*cos2 + x1*sin2``.
        """
        y1 = round_bf16(round_bf16(x1 * c1) - round_bf16(x2 * s1))
        y2 = round_bf16(round_bf16(x2 * c2) + round_bf16(x1 * s2))
        return y1, y2
