"""``silu(gate) * up`` in one Triton kernel, bit for bit what the stock bf16 kernels store.

The stock MLP runs ``act_fn(gate_proj(x)) * up_proj(x)`` as two elementwise kernels over the
intermediate width (11,008 on the 7B): the SiLU reads ``gate`` and writes a new tensor, the
product reads both and writes a third. :func:`silu_mul` reads ``gate`` and ``up`` once and writes
the result over ``gate``. It computes what the stock kernels compute, in float32, with each
stored result rounded to bfloat16 as they store it: SiLU as ``x / (1 + exp(-x))`` with an
IEEE-rounded division and libdevice's ``expf`` (torch's CUDA kernel), then the product (exact
in float32 for two bfloat16 values) rounded once. Bit identity is checked on the GPU by
tests/test_accel_kernels.py and benchmarks/gpu_throughput.py.

Only inference takes it (no gradients: training keeps the stock path and its autograd), on
CUDA, in bfloat16; everything else runs the stock expression.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from qvad.model.accel.counting import count
from qvad.model.accel.kernels.bf16 import tl, triton

FUSED_MLP_ERROR: str | None = None
"""Why the fused kernel could not run here (then the stock expression is used), or None."""

BLOCK = 2048

if triton is not None:
    from triton.language.extra import libdevice

    from qvad.model.accel.kernels.bf16 import round_bf16

    @triton.jit
    def _silu_mul_kernel(G, U, n, BLOCK_SIZE: tl.constexpr):
        """``G[i] = bf16(bf16(silu(G[i])) * U[i])`` over a flat range."""
        offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        keep = offsets < n
        g = tl.load(G + offsets, mask=keep).to(tl.float32)
        u = tl.load(U + offsets, mask=keep).to(tl.float32)
        silu = round_bf16(tl.math.div_rn(g, 1.0 + libdevice.exp(-g)))
        tl.store(G + offsets, round_bf16(silu * u).to(tl.bfloat16), mask=keep)


def silu_mul_applies(gate: torch.Tensor, up: torch.Tensor) -> bool:
    """Whether :func:`silu_mul` takes the kernel: CUDA, bfloat16, same shapes, no gradient wanted."""
    return (triton is not None and FUSED_MLP_ERROR is None and gate.is_cuda and gate.dtype == torch.bfloat16
            and up.dtype == gate.dtype and up.shape == gate.shape and not torch.is_grad_enabled())


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up``; through the kernel (in place in ``gate``) where :func:`silu_mul_applies`."""
    global FUSED_MLP_ERROR
    if silu_mul_applies(gate, up):
        try:
            gate, up = gate.contiguous(), up.contiguous()
            n = gate.numel()
            _silu_mul_kernel[(triton.cdiv(n, BLOCK),)](gate, up, n, BLOCK_SIZE=BLOCK, num_warps=8)
            count("silu_mul_kernel")
            return gate
        except Exception as exc:  # noqa: BLE001 - a kernel that does not build must not stop a run
            FUSED_MLP_ERROR = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"fused SiLU-mul kernel unavailable, using the stock expression: {FUSED_MLP_ERROR}")
    return nn.functional.silu(gate) * up
