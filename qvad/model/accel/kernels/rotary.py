"""Qwen2's rotary embedding in one Triton kernel for q and k together, forward and backward.

Stock ``apply_rotary_pos_emb`` runs ``q * cos + rotate_half(q) * sin`` as five broadcast, strided
bf16 kernels per tensor (mul, neg, cat, mul, add): ~20 % of the 7B scorer's GPU time (H100 and H200
profiles). On CUDA (bf16) :func:`rotary` does it in one kernel per layer, rounding after every step
exactly as the stock kernels do (:func:`qvad.model.accel.kernels.bf16.rotate_half_bf16`), so the result is
bit-identical (checked on an H200 by the benchmark and tests/test_accel_kernels.py). Elsewhere it runs
the stock expression.
"""

from __future__ import annotations

import warnings

import torch
from transformers.models.qwen2.modeling_qwen2 import rotate_half

from qvad.model.accel.counting import count
from qvad.model.accel.kernels.bf16 import tl, triton

if triton is not None:
    from qvad.model.accel.kernels.bf16 import rotate_half_bf16

FUSED_ROTARY_ERROR: str | None = None
"""Why the fused rotary kernel could not run here (then the stock expression is used), or None."""


# Mirrors transformers.models.qwen2.modeling_qwen2.apply_rotary_pos_emb
# Relies on transformers.models.qwen2.modeling_qwen2.rotate_half (called as is)
def _rotary_reference(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                      sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' ``apply_rotary_pos_emb`` for ``[batch, tokens, heads, dim]`` tensors."""
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


if triton is not None:

    @triton.jit
    def _rope_rows(X, Y, row, b, t, n_heads, stride_row, stride_ob, stride_ot, c1, c2, s1, s2, HALF: tl.constexpr,
                   BLOCK_H: tl.constexpr, BACKWARD: tl.constexpr):
        """Rotate one token's heads. Forward: ``x*cos + rotate_half(x)*sin``; backward: its transpose.

        Every product and the sum are rounded to bfloat16 as the stock bf16 kernels store them
        (float32 arithmetic, round to nearest even), so the result is theirs bit for bit.
        """
        h = tl.arange(0, BLOCK_H)[:, None]
        d = tl.arange(0, HALF)[None, :]
        keep = h < n_heads
        src = X + row * stride_row + h * (2 * HALF) + d
        x1 = tl.load(src, mask=keep).to(tl.float32)
        x2 = tl.load(src + HALF, mask=keep).to(tl.float32)
        if BACKWARD:
            # d/dx1 = g1*cos1 + g2*sin2 ; d/dx2 = g2*cos2 - g1*sin1 (autograd's products, rounded):
            # the forward's formula with the sines swapped and negated
            y1, y2 = rotate_half_bf16(x1, x2, c1, c2, -s2, -s1)
        else:
            y1, y2 = rotate_half_bf16(x1, x2, c1, c2, s1, s2)
        dst = Y + b * stride_ob + t * stride_ot + h * (2 * HALF) + d
        tl.store(dst, y1.to(tl.bfloat16), mask=keep)  # exact: y is a bfloat16 value already
        tl.store(dst + HALF, y2.to(tl.bfloat16), mask=keep)

    @triton.jit
    def _rope_kernel(Q, K, QO, KO, COS, SIN, tokens, q_heads, k_heads, stride_q, stride_k, stride_cb,
                     stride_ct, stride_qob, stride_qot, stride_kob, stride_kot, HALF: tl.constexpr,
                     BLOCK_HQ: tl.constexpr, BLOCK_HK: tl.constexpr, BACKWARD: tl.constexpr):
        """One program per token row (batch x position): q's and k's heads share its cos/sin.

        Outputs are addressed by (batch, position) strides, so k can be written straight into
        a larger keys buffer (after a shared prefix)."""
        row = tl.program_id(0).to(tl.int64)
        b = row // tokens
        t = row - b * tokens
        d = tl.arange(0, HALF)[None, :]
        base = b * stride_cb + t * stride_ct
        c1 = tl.load(COS + base + d).to(tl.float32)
        c2 = tl.load(COS + base + HALF + d).to(tl.float32)
        s1 = tl.load(SIN + base + d).to(tl.float32)
        s2 = tl.load(SIN + base + HALF + d).to(tl.float32)
        _rope_rows(Q, QO, row, b, t, q_heads, stride_q, stride_qob, stride_qot, c1, c2, s1, s2, HALF, BLOCK_HQ,
                   BACKWARD)
        _rope_rows(K, KO, row, b, t, k_heads, stride_k, stride_kob, stride_kot, c1, c2, s1, s2, HALF, BLOCK_HK,
                   BACKWARD)


def _rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``x`` as ``[batch, tokens, heads, dim]`` with unit dim stride, dense heads and rows; its row stride."""
    b, t, h, d = x.shape
    if not (x.stride(3) == 1 and x.stride(2) == d and x.stride(0) == t * x.stride(1)):
        x = x.contiguous()
    return x, x.stride(1)


def _launch_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 backward: bool, k_out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the kernel; ``k_out`` (``[batch, tokens, heads, dim]``, dense heads, any batch/position
    strides) receives k instead of a new tensor."""
    b, t, hq, d = q.shape
    hk = k.shape[2]
    q, stride_q = _rows(q)
    k, stride_k = _rows(k)
    cos, sin = cos.contiguous(), sin.contiguous()
    qo = torch.empty((b, t, hq, d), dtype=q.dtype, device=q.device)
    ko = torch.empty((b, t, hk, d), dtype=k.dtype, device=k.device) if k_out is None else k_out
    if ko.shape != k.shape or ko.stride(3) != 1 or ko.stride(2) != d:
        raise ValueError(f"k_out must be [batch, tokens, heads, dim] with dense heads, got {ko.shape} {ko.stride()}")
    stride_cb = 0 if cos.shape[0] == 1 else cos.stride(0)
    _rope_kernel[(b * t,)](
        q, k, qo, ko, cos, sin, t, hq, hk, stride_q, stride_k, stride_cb, cos.stride(1),
        qo.stride(0), qo.stride(1), ko.stride(0), ko.stride(1),
        HALF=d // 2, BLOCK_HQ=triton.next_power_of_2(hq), BLOCK_HK=triton.next_power_of_2(hk),
        BACKWARD=backward, num_warps=4,
    )
    count("fused_rotary_kernel")
    return qo, ko


class _FusedRotary(torch.autograd.Function):
    """The rotary embedding as one kernel each way (cos/sin carry no gradient, as in the stock model)."""

    @staticmethod
    def forward(ctx, q, k, cos, sin):  # noqa: ANN001, ANN205, D102
        ctx.save_for_backward(cos, sin)
        ctx.shapes = (q.shape, q.dtype, k.shape, k.dtype)
        return _launch_rope(q, k, cos, sin, backward=False)

    @staticmethod
    def backward(ctx, grad_q, grad_k):  # noqa: ANN001, ANN205, D102
        cos, sin = ctx.saved_tensors
        q_shape, q_dtype, k_shape, k_dtype = ctx.shapes
        # An output that got no gradient arrives as None: its gradient is zero.
        if grad_q is None:
            grad_q = torch.zeros(q_shape, dtype=q_dtype, device=cos.device)
        if grad_k is None:
            grad_k = torch.zeros(k_shape, dtype=k_dtype, device=cos.device)
        dq, dk = _launch_rope(grad_q, grad_k, cos, sin, backward=True)
        return (dq if ctx.needs_input_grad[0] else None), (dk if ctx.needs_input_grad[1] else None), None, None


def fused_rotary_applies(q: torch.Tensor, cos: torch.Tensor) -> bool:
    """Whether :func:`rotary` takes the Triton kernel for these tensors (CUDA, bfloat16, head dim a power of 2)."""
    half = q.shape[-1] // 2
    return (triton is not None and q.is_cuda and q.dtype == torch.bfloat16
            and cos.dtype == q.dtype and q.shape[-1] % 2 == 0 and half & (half - 1) == 0)


def rotary_into(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_out: torch.Tensor,
                fused: bool = True) -> torch.Tensor:
    """:func:`rotary` without autograd, writing k's result into ``k_out``; returns q's (scoring only)."""
    global FUSED_ROTARY_ERROR
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
        raise RuntimeError("rotary_into is for inference: its write into k_out is not recorded by autograd")
    if (fused and FUSED_ROTARY_ERROR is None and fused_rotary_applies(q, cos) and k.dtype == q.dtype
            and sin.dtype == q.dtype):
        try:
            return _launch_rope(q, k, cos, sin, backward=False, k_out=k_out)[0]
        except Exception as exc:  # noqa: BLE001 - a kernel that does not build must not stop a run
            FUSED_ROTARY_ERROR = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"fused rotary kernel unavailable, using the stock expression: {FUSED_ROTARY_ERROR}")
    q, k = _rotary_reference(q, k, cos, sin)
    k_out.copy_(k)
    return q


def rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
           fused: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary embedding of ``q``/``k`` ``[batch, tokens, heads, dim]`` with ``cos``/``sin`` ``[1 or batch, tokens, dim]``.

    Same values as transformers' ``apply_rotary_pos_emb``: the fused kernel (CUDA, bfloat16)
    rounds each product and the sum to bfloat16 as the stock kernels do. Other dtypes run the
    stock expression.
    """
    global FUSED_ROTARY_ERROR
    if (fused and FUSED_ROTARY_ERROR is None and fused_rotary_applies(q, cos) and k.dtype == q.dtype
            and sin.dtype == q.dtype):
        try:
            return _FusedRotary.apply(q, k, cos, sin)
        except Exception as exc:  # noqa: BLE001 - a kernel that does not build must not stop a run
            FUSED_ROTARY_ERROR = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"fused rotary kernel unavailable, using the stock expression: {FUSED_ROTARY_ERROR}")
    return _rotary_reference(q, k, cos, sin)
