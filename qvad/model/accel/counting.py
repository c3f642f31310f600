"""Process-wide counts of the times each speed-up ran, so a run can show that it took the fast paths.

A speed-up that is installed but never taken (a wrong dtype, a kernel that did not build, a
keyword that did not reach a layer) gives the right numbers slowly; only a count shows it. Every
fast path adds to one named counter here; :func:`counters` reads them (a copy), and
:func:`reset_counters` starts over (a test or benchmark around one call). They are counts only:
nothing reads them to choose a path.
"""

from __future__ import annotations

from collections import Counter

NAMES = {
    "prefix_reads": "decoder attention layers that read a shared prompt prefix (scoring and the train loss)",
    "one_pass_calls": "unpadded scoring attentions over the prefix and own keys (one-pass kernel or split path)",
    "one_pass_kernel": "launches of the one-pass Triton kernel (CUDA)",
    "split_merge_kernel": "launches of the log-sum-exp merge kernel of the split path (CUDA)",
    "fused_rotary_kernel": "launches of the fused rotary kernel, forward or backward (CUDA)",
    "answer_slot_layers": "last decoder layers run at the answer slot only",
    "residual_gemm_adds": "residual adds done inside an output projection's GEMM (CUDA)",
    "silu_mul_kernel": "launches of the fused SiLU-mul kernel (CUDA)",
    "fused_rms_norm": "decoder RMSNorms run by torch's fused kernel",
    "strided_encoder_attention": "audio encoder attentions run on strided views",
    "encoder_cache_hits": "clips whose frozen encoder output (or front) came from the cache",
    "encoder_cache_misses": "clips the frozen encoder cache had to encode",
}
"""Every counter and what it counts."""

_COUNTS: Counter[str] = Counter()


def count(name: str, n: int = 1) -> None:
    """Add ``n`` to counter ``name`` (one of :data:`NAMES`)."""
    if name not in NAMES:
        raise KeyError(f"unknown accel counter {name!r}; known: {sorted(NAMES)}")
    _COUNTS[name] += n


def counters() -> dict[str, int]:
    """A copy of every counter (all of :data:`NAMES`, zeros included), since the process started or
    the last :func:`reset_counters`."""
    return {name: _COUNTS[name] for name in NAMES}


def reset_counters() -> None:
    """Set every counter to zero."""
    _COUNTS.clear()
