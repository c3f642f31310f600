"""Scoring attention over the shared prefix and each row's own keys in one kernel, rotary included.

The split path (qvad.model.accel.kernels.prefix_split) attends to the prefix and to the rows' own keys in two
flash-attention calls and merges them by log-sum-exp, after a rotary kernel has rotated q and k.
Per layer that is four kernels and three round trips of a ``[batch, T, heads, dim]`` tensor
through memory besides q, k and v themselves; with 32 own tokens a flash call also spends most of
its 128-query tiles on nothing. On the 7B scorer with the question first they took 9 % of the
GPU time for well under 1 % of its FLOPs (H200 profile, benchmarks/README.md).

:func:`one_pass_attention` does it as one Triton program per (row, head, block of queries):
it loads its queries and rotates them, runs an online softmax over the prefix's keys (post-rotary,
one copy for all rows, read from L2) and then causally over its row's own keys (rotated as they
are loaded), and writes the ``[batch, T, heads * dim]`` input of ``o_proj``. The rotation is the
stock bf16 arithmetic, rounded step by step as its kernels store it
(:func:`qvad.model.accel.kernels.bf16.rotate_half_bf16`), so q and k are bit for bit what
:func:`qvad.model.accel.kernels.rotary.rotary` gives; the attention itself is flash attention's
arithmetic (float32 scores and sums, bfloat16 probabilities into the value product), so its result
matches flash's up to summation order. Checked against the split path and the stock attention on
CUDA in tests/test_accel_kernels.py and by benchmarks/gpu_throughput.py.

It pays where every row's queries fit one block of 32, which is the question-first layout (32
own tokens). Measured on one H200 per layer at the 7B's shapes (benchmarks/gpu/prefix_attention_tiles.py,
benchmarks/results/prefix_attention_tiles_h200.txt): 2,048 rows, 53 prefix and 32 own tokens, 1.745 ms against
2.911 for rotary + split; but 1,024 rows of 66 own tokens (audio first) 3.07 against 2.76, and the
answer slot's single query 3.05 against 2.05 (at 64-key steps). So it serves unpadded scoring
batches on CUDA in bfloat16 with a power-of-two head dim and at most :data:`MAX_BLOCK_M` queries,
not the answer slot; anything else, or a kernel that does not build, takes the split path.
"""

from __future__ import annotations

import warnings

import torch

from qvad.model.accel.counting import count
from qvad.model.accel.kernels.bf16 import tl, triton
from qvad.model.accel.kernels.prefix_split import split_prefix_attention
from qvad.model.accel.kernels.rotary import rotary

ONE_PASS_KERNEL_ERROR: str | None = None
"""Why the one-pass kernel could not run here (then the split path is used), or None."""

BLOCK_N = 32
"""Keys per step of the online softmax: 1.745 ms against 3.952 with 64 (4 warps, 32 queries; tiles file above)."""
MIN_BLOCK_M = 16
"""The smallest query block ``tl.dot`` takes (the answer slot's single query pads to it)."""
MAX_BLOCK_M = 32
"""Rows with more own tokens than this take the split path (measured slower in one pass, docstring)."""

if triton is not None:
    from qvad.model.accel.kernels.bf16 import rotate_half_bf16

    @triton.jit
    def _load_halves(base, rows, row_stride, keep, HALF: tl.constexpr):
        """Rows ``rows`` of a ``[*, 2 * HALF]`` head as its two halves (float32; masked rows 0)."""
        d = tl.arange(0, HALF)[None, :]
        ptr = base + rows[:, None] * row_stride + d
        lo = tl.load(ptr, mask=keep[:, None], other=0.0).to(tl.float32)
        hi = tl.load(ptr + HALF, mask=keep[:, None], other=0.0).to(tl.float32)
        return lo, hi

    @triton.jit
    def _rotated(base, rows, row_stride, keep, COS, SIN, cos_base, cos_stride, ROTATE: tl.constexpr,
                 HALF: tl.constexpr):
        """:func:`_load_halves`, rotated at positions ``rows`` when ``ROTATE`` (bfloat16 values either way)."""
        lo, hi = _load_halves(base, rows, row_stride, keep, HALF)
        if ROTATE:
            c1, c2 = _load_halves(COS + cos_base, rows, cos_stride, keep, HALF)
            s1, s2 = _load_halves(SIN + cos_base, rows, cos_stride, keep, HALF)
            lo, hi = rotate_half_bf16(lo, hi, c1, c2, s1, s2)
        return lo.to(tl.bfloat16), hi.to(tl.bfloat16)

    @triton.jit
    def _softmax_step(q1, q2, k1, k2, v, visible, m_i, l_i, acc, scale_log2):
        """One block of keys into the running max ``m_i``, sum ``l_i`` and output (flash attention's update)."""
        s = tl.dot(q1, tl.trans(k1)) + tl.dot(q2, tl.trans(k2))
        s = tl.where(visible, s * scale_log2, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(tl.bfloat16), v)
        return m_new, l_i, acc

    @triton.jit
    def _one_pass_kernel(Q, K, V, PK, PV, COS, SIN, OUT, tokens, q_start, prefix_len, heads, kv_groups,
                         scale_log2, sqb, sqt, sqh, skb, skt, skh, svb, svt, svh, spk_t, spk_h, spv_t, spv_h,
                         scb, sct, sob, sot, ROTATE: tl.constexpr, HALF: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr):
        """Queries ``q_start + [m * BLOCK_M, (m + 1) * BLOCK_M)`` of one (row, head): prefix, then own keys.

        Rows x heads run along the grid's first axis (the second allows only 65,535 programs)."""
        bh = tl.program_id(0).to(tl.int64)
        m_block = tl.program_id(1)
        b = bh // heads
        h = bh - b * heads
        hk = h // kv_groups
        q_rows = q_start + m_block * BLOCK_M + tl.arange(0, BLOCK_M)  # positions among the row's own tokens
        q_keep = q_rows < tokens
        cos_base = b * scb
        q1, q2 = _rotated(Q + b * sqb + h * sqh, q_rows, sqt, q_keep, COS, SIN, cos_base, sct, ROTATE, HALF)
        d = tl.arange(0, 2 * HALF)[None, :]
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, 2 * HALF], tl.float32)
        for start in range(0, prefix_len, BLOCK_N):  # every query sees the whole prefix
            n = start + tl.arange(0, BLOCK_N)
            n_keep = n < prefix_len
            k1, k2 = _load_halves(PK + hk * spk_h, n, spk_t, n_keep, HALF)
            v = tl.load(PV + hk * spv_h + n[:, None] * spv_t + d, mask=n_keep[:, None], other=0.0)
            m_i, l_i, acc = _softmax_step(q1, q2, k1.to(tl.bfloat16), k2.to(tl.bfloat16), v, n_keep[None, :], m_i,
                                          l_i, acc, scale_log2)
        last = tl.minimum(tokens, q_start + (m_block + 1) * BLOCK_M)
        for start in range(0, last, BLOCK_N):  # own keys up to each query's position
            n = start + tl.arange(0, BLOCK_N)
            n_keep = n < tokens
            k1, k2 = _rotated(K + b * skb + hk * skh, n, skt, n_keep, COS, SIN, cos_base, sct, ROTATE, HALF)
            v = tl.load(V + b * svb + hk * svh + n[:, None] * svt + d, mask=n_keep[:, None], other=0.0)
            visible = n_keep[None, :] & (n[None, :] <= q_rows[:, None])
            m_i, l_i, acc = _softmax_step(q1, q2, k1, k2, v, visible, m_i, l_i, acc, scale_log2)
        dst = OUT + b * sob + (q_rows - q_start)[:, None] * sot + h * (2 * HALF) + d
        tl.store(dst, (acc / l_i[:, None]).to(OUT.dtype.element_ty), mask=q_keep[:, None])


def one_pass_applies(query: torch.Tensor, prefix_key: torch.Tensor, last_query: bool = False) -> bool:
    """Whether :func:`one_pass_attention` takes the kernel: CUDA, bfloat16, head dim a power of 2 of at
    least 32, at most :data:`MAX_BLOCK_M` own tokens, every position wanted (not the answer slot)."""
    dim = query.shape[-1]
    return (triton is not None and ONE_PASS_KERNEL_ERROR is None and query.is_cuda and query.dtype == torch.bfloat16
            and prefix_key.dtype == query.dtype and dim >= 32 and dim & (dim - 1) == 0
            and query.shape[1] <= MAX_BLOCK_M and not last_query and not torch.is_grad_enabled())


def launch(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, prefix_key: torch.Tensor,
           prefix_value: torch.Tensor, scale: float, rotation: tuple[torch.Tensor, torch.Tensor] | None,
           last_query: bool, block_m: int | None = None, block_n: int = BLOCK_N, num_warps: int = 4) -> torch.Tensor:
    """Run the kernel (no checks, no fallback); the tile arguments for benchmarks/gpu/prefix_attention_tiles.py."""
    batch, tokens, heads, dim = query.shape
    kv_heads = key.shape[2]
    q_start = tokens - 1 if last_query else 0
    q_count = tokens - q_start
    if block_m is None:
        block_m = min(MAX_BLOCK_M, max(MIN_BLOCK_M, triton.next_power_of_2(q_count)))
    for name, x in (("query", query), ("key", key), ("value", value), ("prefix_key", prefix_key),
                    ("prefix_value", prefix_value)):
        if x.stride(-1) != 1:
            raise ValueError(f"{name} needs a unit stride in its head dim, got strides {x.stride()}")
    if rotation is None:
        cos = sin = query  # unread (ROTATE False)
        scb = sct = 0
    else:
        cos, sin = (x.contiguous() for x in rotation)
        if cos.shape[-2:] != (tokens, dim):
            raise ValueError(f"cos/sin must be [1 or batch, {tokens}, {dim}], got {tuple(cos.shape)}")
        scb, sct = (0 if cos.shape[0] == 1 else cos.stride(0)), cos.stride(1)
    out = torch.empty((batch, q_count, heads * dim), dtype=query.dtype, device=query.device)
    grid = (batch * heads, triton.cdiv(q_count, block_m))
    _one_pass_kernel[grid](
        query, key, value, prefix_key, prefix_value, cos, sin, out, tokens, q_start, prefix_key.shape[1], heads,
        heads // kv_heads, scale * 1.4426950408889634,  # log2(e): the softmax runs in exp2
        *query.stride()[:3], *key.stride()[:3], *value.stride()[:3], *prefix_key.stride()[1:3],
        *prefix_value.stride()[1:3], scb, sct, out.stride(0), out.stride(1),
        ROTATE=rotation is not None, HALF=dim // 2, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps)
    return out


def one_pass_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, prefix_key: torch.Tensor,
                       prefix_value: torch.Tensor, scale: float,
                       rotation: tuple[torch.Tensor, torch.Tensor] | None,
                       last_query: bool = False, one_pass: bool = True) -> torch.Tensor:
    """Attention of unpadded rows over a shared prefix and then causally over their own keys.

    ``query`` ``[B, T, H, D]`` and ``key``/``value`` ``[B, T, kv_heads, D]`` are the rows' own
    projections, before the rotary embedding if ``rotation`` (``cos``, ``sin``, ``[1 or B, T, D]``)
    is given, after it if None; ``prefix_key``/``prefix_value`` ``[1, P, kv_heads, D]`` are
    post-rotary. With ``last_query`` only the last position's output is computed. Returns
    ``[B, Tq, H * D]`` with ``Tq`` = ``T`` or 1. Where :func:`one_pass_applies` does not hold (or
    ``one_pass`` is False, for A/B measurements), it rotates with
    :func:`qvad.model.accel.kernels.rotary.rotary` and runs the split path
    (qvad.model.accel.kernels.prefix_split).
    """
    global ONE_PASS_KERNEL_ERROR
    if one_pass and one_pass_applies(query, prefix_key, last_query):
        try:
            out = launch(query, key, value, prefix_key, prefix_value, scale, rotation, last_query)
            count("one_pass_kernel")
            return out
        except Exception as exc:  # noqa: BLE001 - a kernel that does not build must not stop a run
            ONE_PASS_KERNEL_ERROR = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"one-pass prefix attention unavailable, using the split path: {ONE_PASS_KERNEL_ERROR}")
    if rotation is not None:
        query, key = rotary(query, key, *rotation)
    return split_prefix_attention(query, key, value, prefix_key, prefix_value, scale, last_query)
