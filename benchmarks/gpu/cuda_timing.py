"""Wall time of one CUDA call, for the kernel benchmarks that compare variants side by side in one run."""

from __future__ import annotations

import time
from typing import Callable

import torch


def ms_per_call(fn: Callable[[], object], calls: int = 20) -> float:
    """Mean milliseconds of ``calls`` runs of ``fn`` after one warm-up (which also builds Triton kernels)."""
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e3
