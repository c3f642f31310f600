"""Pin the CPU's floating-point kernels and thread count, so a CPU run gives the same bytes anywhere.

torch picks its vector kernels (AVX2, AVX-512) and MKL its GEMM code path from the CPU it runs
on, and parallel reductions split their sums by thread count. The last bits differ from machine
to machine, and a tiny model trained for hundreds of steps turns them into another adapter:
measured on one machine with the same params, 1 thread vs 2 gave dev balanced accuracy 0.612 vs
0.676, and an unpinned run on another CPU gave test balanced accuracy 0.619 where the committed
one had 0.657. Pinning the AVX2 code paths (every x86-64 CPU of the last decade has them) and the
thread count (params.yaml ``cpu_threads``) makes `dvc repro` reproduce the committed dvc.lock on
another machine. GPU arithmetic is not made bitwise portable by this.

The kernel variables are read lazily, at the first CPU kernel call, so :func:`pin_cpu_numerics`
must run before any tensor work; a value already in the environment wins.
"""

from __future__ import annotations

import os

import torch

from qvad.common.params import require

PORTABLE = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorised kernels
    "MKL_CBWR": "AVX2,STRICT",      # MKL GEMM: the AVX2 code path, strict reproducibility mode
    "ONEDNN_MAX_CPU_ISA": "AVX2",   # oneDNN convolutions and matmuls
}


def pin_cpu_numerics(threads: int | None) -> dict[str, str | int]:
    """Select the portable CPU kernels and ``threads`` intra-op threads (None: all cores).

    Returns what is in force, for the metrics. ``threads=None`` is faster on a large machine,
    but its bytes then depend on the core count.
    """
    require(threads is None or (isinstance(threads, int) and threads >= 1), "cpu_threads",
            f"must be a positive integer or null, got {threads!r}")
    for key, value in PORTABLE.items():
        os.environ.setdefault(key, value)
    if threads is not None:
        torch.set_num_threads(threads)
    return {**{key: os.environ[key] for key in PORTABLE}, "threads": torch.get_num_threads()}
