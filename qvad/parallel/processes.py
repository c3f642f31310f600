"""``train.processes``: how many data-parallel processes the model stages run, checked before any start.

One knob drives training and the scoring stages alike, so ``dvc exp run -S train.processes=N``
spreads the whole model side of the pipeline over N GPUs. A bad value fails here, naming the key,
instead of inside torchrun (whose own messages do not know about params.yaml).
"""

from __future__ import annotations

from typing import Any

import torch

from qvad.common.params import get, require

KEY = "train.processes"


def process_count(params: dict[str, Any]) -> int:
    """The validated ``train.processes``."""
    value = get(params, KEY)
    require(isinstance(value, int) and not isinstance(value, bool) and value >= 1, KEY,
            f"must be a positive integer (processes to start), got {value!r}")
    return value


def check_devices(processes: int, gpus: int | None = None) -> None:
    """One process per GPU: on a CUDA machine, refuse more processes than GPUs.

    ``gpus`` defaults to the visible CUDA devices; 0 means a CPU machine, where any count runs
    (gloo), each process with ``cpu_threads`` threads."""
    gpus = torch.cuda.device_count() if gpus is None else gpus
    require(gpus == 0 or processes <= gpus, KEY,
            f"{processes} processes but this machine has {gpus} visible GPUs (one process per GPU)")


def per_process_batch(batch_size: int, processes: int) -> int:
    """Rows of each process's micro-batch, so that the optimiser still sees
    ``train.batch_size x train.grad_accum`` clips a step whatever the process count."""
    require(batch_size % processes == 0, KEY,
            f"train.batch_size {batch_size} does not split evenly over {processes} processes "
            f"(each process takes batch_size / processes clips a micro-step)")
    return batch_size // processes


def check_processes(params: dict[str, Any], gpus: int | None = None) -> int:
    """Every check of the process count: a positive int, GPUs enough, the batch divisible by it."""
    processes = process_count(params)
    check_devices(processes, gpus)
    per_process_batch(int(get(params, "train.batch_size")), processes)
    return processes
