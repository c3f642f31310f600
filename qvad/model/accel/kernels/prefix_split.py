"""Attention over a shared prefix and each row's own keys apart, merged by their log-sum-exp.

Scoring attends every row to the same prefix keys/values (:class:`~qvad.model.accel.shared_prefix.SharedPrefix`)
followed by its own. One attention call needs them side by side in a ``[batch, P + T, ...]``
buffer, so the prefix is copied into every row of every layer: with the question before the audio
(53 prefix tokens, 32 own) that broadcast copy took 10 % of the 7B scorer's GPU time (H200 profile,
benchmarks/results/gpu_throughput_7b_h200_answer_slot.json), and flash attention wasted most of
its 128-query tiles on 32-query rows.

Softmax attention splits exactly over a partition of the keys: with ``o_i`` and ``lse_i`` the
output and log-sum-exp of the queries over part ``i``,
``o = sigmoid(lse_1 - lse_2) * o_1 + sigmoid(lse_2 - lse_1) * o_2``. So the prefix part runs as
one attention of all ``batch x T`` queries (one long row, no mask) over the ``P`` prefix keys,
read once, and the own part as a causal ``T x T`` attention per row; no copy of the prefix is
made. The merge is one kernel on CUDA (float32 arithmetic, one bfloat16 rounding at the end).
The result equals the single attention up to the rounding of the two partial outputs to the
compute dtype (checked against it in tests/test_accel_kernels.py and benchmarks/gpu_throughput.py).

It serves unpadded batches only (rows whose own keys are all real: the lower-right
``CausalBias`` case); padded batches keep the buffer path.
"""

from __future__ import annotations

import warnings

import torch

from qvad.model.accel.counting import count
from qvad.model.accel.kernels.bf16 import tl, triton

MERGE_KERNEL_ERROR: str | None = None
"""Why the Triton merge kernel could not run here (then the torch expression is used), or None."""

if triton is not None:

    @triton.jit
    def _merge_kernel(O1, L1, O2, L2, OUT, tokens, heads, s1b, s1t, s1h, l1b, l1t, l1h, s2b, s2t, s2h,
                      l2b, l2t, l2h, DIM: tl.constexpr, BLOCK_H: tl.constexpr):
        """One program per query (batch x position): its heads' two partial outputs, weighted by lse."""
        row = tl.program_id(0).to(tl.int64)
        b = row // tokens
        t = row - b * tokens
        h = tl.arange(0, BLOCK_H)[:, None]
        d = tl.arange(0, DIM)[None, :]
        keep = h < heads
        lse1 = tl.load(L1 + b * l1b + t * l1t + h * l1h, mask=keep, other=0.0)
        lse2 = tl.load(L2 + b * l2b + t * l2t + h * l2h, mask=keep, other=0.0)
        w = 1.0 / (1.0 + tl.exp(lse2 - lse1))  # sigmoid(lse1 - lse2): part 1's share of the softmax mass
        o1 = tl.load(O1 + b * s1b + t * s1t + h * s1h + d, mask=keep).to(tl.float32)
        o2 = tl.load(O2 + b * s2b + t * s2t + h * s2h + d, mask=keep).to(tl.float32)
        tl.store(OUT + row * heads * DIM + h * DIM + d, (o2 + (o1 - o2) * w).to(OUT.dtype.element_ty), mask=keep)


def _flash_applies(query: torch.Tensor) -> bool:
    """Whether torch's flash attention (which returns the log-sum-exp) takes these queries."""
    return (query.is_cuda and query.dtype in (torch.float16, torch.bfloat16)
            and query.shape[-1] % 8 == 0 and query.shape[-1] <= 256)


def attend_with_lse(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, causal: bool,
                    scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of ``[B, H, Lq, D]`` queries over ``[B, H, Lk, D]`` keys, and its log-sum-exp ``[B, H, Lq]`` (float32).

    ``causal`` needs ``Lq == Lk``. CUDA half precision runs flash attention; elsewhere the
    same arithmetic runs in float32.
    """
    if _flash_applies(query):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, 0.0, causal, False,
                                                                      scale=scale)[:2]
        return out, lse[..., : query.shape[-2]]
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scale
    if causal:
        future = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    out = torch.matmul(torch.exp(scores - lse[..., None]), value.float())
    return out.to(query.dtype), lse


def merge(o1: torch.Tensor, lse1: torch.Tensor, o2: torch.Tensor, lse2: torch.Tensor) -> torch.Tensor:
    """Two partial attentions ``[B, T, H, D]`` (any strides, unit ``D`` stride) with their ``[B, T, H]``
    log-sum-exps, as the attention over both key sets: a new ``[B, T, H * D]`` tensor."""
    global MERGE_KERNEL_ERROR
    batch, tokens, heads, dim = o1.shape
    if (triton is not None and MERGE_KERNEL_ERROR is None and o1.is_cuda and o1.stride(3) == 1
            and o2.stride(3) == 1 and dim & (dim - 1) == 0):
        out = torch.empty((batch, tokens, heads * dim), dtype=o1.dtype, device=o1.device)
        try:
            _merge_kernel[(batch * tokens,)](
                o1, lse1, o2, lse2, out, tokens, heads, *o1.stride()[:3], *lse1.stride(), *o2.stride()[:3],
                *lse2.stride(), DIM=dim, BLOCK_H=triton.next_power_of_2(heads), num_warps=4)
            count("split_merge_kernel")
            return out
        except Exception as exc:  # noqa: BLE001 - a kernel that does not build must not stop a run
            MERGE_KERNEL_ERROR = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"attention merge kernel unavailable, using the torch expression: {MERGE_KERNEL_ERROR}")
    w = torch.sigmoid(lse1 - lse2)[..., None]
    dtype, o1, o2 = o1.dtype, o1.float(), o2.float()
    return (o2 + (o1 - o2) * w).to(dtype).reshape(batch, tokens, -1)


def _repeat_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[B, L, kv_heads, D]`` keys/values repeated to ``heads`` (grouped-query attention)."""
    groups = heads // x.shape[2]
    return x if groups == 1 else x.repeat_interleave(groups, dim=2)


def split_prefix_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, prefix_key: torch.Tensor,
                           prefix_value: torch.Tensor, scale: float, last_query: bool = False) -> torch.Tensor:
    """Attention of rows over a shared prefix and then causally over their own keys, all unpadded.

    ``query`` ``[B, T, H, D]`` and ``key``/``value`` ``[B, T, kv_heads, D]`` are the rows' own
    (post-rotary) tensors, ``prefix_key``/``prefix_value`` ``[1, P, kv_heads, D]``. With
    ``last_query`` only the last position's output is computed (it sees every key). Returns
    ``[B, Tq, H * D]`` with ``Tq`` = ``T`` or 1.
    """
    batch, tokens, heads, dim = query.shape
    if last_query:
        query, tokens = query[:, -1:], 1
    key, value = _repeat_heads(key, heads), _repeat_heads(value, heads)
    prefix_key, prefix_value = _repeat_heads(prefix_key, heads), _repeat_heads(prefix_value, heads)
    # The prefix: every query of the batch as one long row (no mask: all of the prefix is visible).
    o1, lse1 = attend_with_lse(query.reshape(1, batch * tokens, heads, dim).transpose(1, 2),
                               prefix_key.transpose(1, 2), prefix_value.transpose(1, 2), False, scale)
    # Own keys: causal per row (the last query alone sees all of them).
    o2, lse2 = attend_with_lse(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                               not last_query, scale)
    # Back to [B, T, H, ...]: views of the prefix part's one long row (flash stores it query-major).
    o1, lse1 = o1.transpose(1, 2).reshape(batch, tokens, heads, dim), lse1.transpose(1, 2).reshape(batch, tokens, heads)
    return merge(o1, lse1, o2.transpose(1, 2), lse2.transpose(1, 2))
