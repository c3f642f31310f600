"""Start a stage in ``train.processes`` processes: ``python -m qvad.parallel.launch stages.train``.

dvc.yaml runs the model stages through this module. With one process it runs the stage's module
right here, in this Python process, exactly as ``python -m stages.train`` would (same code, same
bytes). With more it hands the module to torchrun (``torch.distributed.run``, ``--standalone``: one
machine, a free rendezvous port), which starts that many copies with ``RANK`` / ``WORLD_SIZE`` set;
the stage then joins the group (:mod:`qvad.parallel.group`). The count is checked first, so a bad
value fails with the params key named rather than inside torchrun.

torchrun sets ``OMP_NUM_THREADS=1`` in each process when it is unset, and accelerate would
otherwise size threads from the core count: both are overridden by ``cpu_threads``, so every
process computes with the threads a one-process run uses (same per-row arithmetic on the CPU).
"""

from __future__ import annotations

import os
import runpy
import sys

from qvad.common.params import load_params
from qvad.parallel.processes import check_processes


def launched_by_torchrun() -> bool:
    """Whether this process is one of a torchrun group (torchrun sets ``LOCAL_RANK``)."""
    return "LOCAL_RANK" in os.environ


def main(argv: list[str]) -> None:
    """``argv``: the stage module to run (e.g. ``stages.evaluate``)."""
    if len(argv) != 1:
        raise SystemExit("usage: python -m qvad.parallel.launch STAGE_MODULE (e.g. stages.train)")
    module = argv[0]
    params = load_params()
    processes = check_processes(params)
    if processes == 1 or launched_by_torchrun():
        sys.argv = [module]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return
    from torch.distributed import run as torchrun  # heavy: only when starting a group

    threads = params.get("cpu_threads")
    if threads is not None:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    torchrun.main(["--standalone", f"--nproc_per_node={processes}", "-m", module])


if __name__ == "__main__":
    main(sys.argv[1:])
