"""How often each speed-up of the model code actually ran in one stage process (counters, not assumptions).

:func:`install` wraps, for the life of the process, the functions through which each fast path
is taken (the point where the path is chosen, or the kernel launched), so a count of 0 means the
path was not taken. :func:`read` returns the counts plus the frozen-encoder cache's rows encoded
and reused. Both must be called in the stage process itself; ``benchmarks.gpu_pipeline.stage``
calls :func:`install` before the stage imports its model code's users and :func:`read` after.
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any, Callable

COUNTS: Counter = Counter()
CACHES: list[Any] = []

WRAPPED = (
    # (module, attribute, counter, what counts: "calls" or "true" results)
    ("qvad.model.fast_attention", "one_pass_attention", "one_pass_attention_calls", "calls"),
    ("qvad.model.residual_gemm", "add_into", "residual_gemm_fused_adds", "calls"),
    ("qvad.model.fused_mlp", "silu_mul_applies", "fused_mlp_kernel_calls", "true"),
    ("qvad.model.rotary", "_launch_rope", "fused_rotary_launches", "calls"),
    ("qvad.model.answer_slot", "_answer_slot_applies", "answer_slot_layers", "true"),
    ("qvad.model.encoder_truncation", "truncated_frames", "encoder_truncations", "calls"),
)


def _counting(fn: Callable, name: str, mode: str) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        if mode == "calls" or out:
            COUNTS[name] += 1
        return out
    return wrapper


def install() -> None:
    """Wrap every counted function and the shared prefix's and encoder cache's classes (once)."""
    import importlib

    from qvad.model.encoder_cache import FrozenEncoderCache
    from qvad.model.fast_attention import SharedPrefix

    if getattr(SharedPrefix.read, "_counted", False):
        return
    for module_name, attr, name, mode in WRAPPED:
        module = importlib.import_module(module_name)
        setattr(module, attr, _counting(getattr(module, attr), name, mode))
    read_prefix = _counting(SharedPrefix.read, "shared_prefix_layer_reads", "calls")
    read_prefix._counted = True  # type: ignore[attr-defined]
    SharedPrefix.read = read_prefix
    init_cache = FrozenEncoderCache.__init__

    def registering_init(self: Any, *args: Any, **kwargs: Any) -> None:
        init_cache(self, *args, **kwargs)
        CACHES.append(self)
    FrozenEncoderCache.__init__ = registering_init


def read() -> dict[str, int]:
    """Counts so far, with ``encoder_cache_misses`` (rows encoded) and ``encoder_cache_hits`` (rows reused)."""
    out = {name: int(COUNTS.get(name, 0)) for _, _, name, _ in WRAPPED}
    out["shared_prefix_layer_reads"] = int(COUNTS.get("shared_prefix_layer_reads", 0))
    out["encoder_cache_misses"] = sum(int(c.misses) for c in CACHES)
    out["encoder_cache_hits"] = sum(int(c.hits) for c in CACHES)
    return out
