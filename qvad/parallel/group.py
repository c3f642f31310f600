"""Joining the process group torchrun started, with the checks that catch its silent failures.

A stage started by :mod:`qvad.parallel.launch` with N > 1 processes calls :func:`join_group` before
loading a model: it makes the process group (gloo on the CPU, nccl with one GPU per process,
through accelerate's :class:`~accelerate.PartialState`, which also selects this process's GPU) and
refuses to go on if the group is not the one asked for. Without ``cpu=True`` on a machine with no
GPU, accelerate finds no backend and every torchrun process would silently run alone (world size
1), all writing the same outputs; that is checked here, as is a torchrun started by hand with
another count than ``train.processes``. A stage not under torchrun gets a one-process group and
touches nothing of torch.distributed (its run stays byte-identical to the code before this module).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch.distributed as dist

from qvad.parallel.launch import launched_by_torchrun
from qvad.parallel.processes import KEY, process_count

T = TypeVar("T")


@dataclass(frozen=True)
class Group:
    """This process's place in the group: ``rank`` of ``size``; rank 0 alone writes outputs."""

    rank: int
    size: int

    @property
    def is_main(self) -> bool:
        """Whether this process writes the stage's outputs."""
        return self.rank == 0


def check_world(actual: int, expected: int, started: int) -> None:
    """Refuse a group whose size is not what torchrun started (``started``, its ``WORLD_SIZE``)
    and ``train.processes`` asked for (``expected``)."""
    if actual != started:
        raise RuntimeError(
            f"torchrun started {started} processes but this one joined a group of {actual}: on a CPU the "
            "processes need the gloo backend with cpu=True (TrainingArguments(use_cpu=True, ddp_backend='gloo')); "
            "without it each would train alone and all would write the same outputs")
    if actual != expected:
        raise RuntimeError(f"params.yaml: {KEY}: is {expected} but torchrun started {actual} processes; "
                           f"run the stage through `python -m qvad.parallel.launch` (dvc.yaml does)")


def torchrun_world_size() -> int:
    """``WORLD_SIZE`` as torchrun set it (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def join_group(params: dict[str, Any], device: str) -> Group:
    """This process's :class:`Group`; under torchrun, the process group is started first
    (``device``: 'cpu' gives gloo, 'cuda' nccl with this process's GPU selected)."""
    if not launched_by_torchrun():
        return Group(0, 1)
    from accelerate import PartialState  # imported only by processes of a group

    cpu = device == "cpu"
    state = PartialState(cpu=cpu, backend="gloo" if cpu else "nccl")
    check_world(state.num_processes, process_count(params), torchrun_world_size())
    return Group(state.process_index, state.num_processes)


def check_launched(processes: int) -> None:
    """Refuse ``processes`` > 1 in a process torchrun did not start (``python -m stages.train`` by hand)."""
    if processes > 1 and not launched_by_torchrun():
        raise RuntimeError(f"params.yaml: {KEY}: is {processes}, but this process was not started by torchrun: "
                           "run the stage as dvc.yaml does, `python -m qvad.parallel.launch stages.<name>`")


def training_group(args: Any, processes: int) -> Group:
    """This process's :class:`Group` from the Trainer's ``TrainingArguments`` (which started the
    process group under torchrun), checked as :func:`join_group` checks a scoring group."""
    check_world(args.world_size, processes, torchrun_world_size())
    return Group(args.process_index, args.world_size)


def broadcast_from_main(make: Callable[[], T], group: Group) -> T:
    """``make()`` run on rank 0 alone (it may write files), its result sent to every process."""
    value = make() if group.is_main else None
    if group.size > 1:
        box = [value]
        dist.broadcast_object_list(box, src=0)
        value = box[0]
    return value
