"""Run one pipeline stage (or ``qvad predict``) in this process and record what it cost.

    python -m benchmarks.gpu_pipeline.stage STAGE RESULT.json [ARGS...]

``STAGE`` is a module of ``stages/`` (run exactly as ``python -m stages.STAGE`` runs it, from the
current directory's params.yaml), ``predict`` (``qvad predict ARGS...``) or ``reload`` (the
adapter check of :mod:`benchmarks.gpu_pipeline.reload`). RESULT.json gets the exit status, the
wall time, the peak GPU memory (allocated and reserved, whole process) and the fast-path counters
(:mod:`benchmarks.gpu_pipeline.counters`); the exit status is the stage's.
"""

from __future__ import annotations

import json
import runpy
import sys
import time
import traceback
from pathlib import Path

from benchmarks.gpu_pipeline import counters

GIB = 2**30


def run(stage: str, args: list[str]) -> int:
    """The stage's exit status (0 when it returns normally)."""
    try:
        if stage == "predict":
            from qvad.cli import main
            return int(main(["predict", *args]))
        if stage == "reload":
            from benchmarks.gpu_pipeline.reload import main as reload_main
            return int(reload_main(args))
        sys.argv = [f"stages/{stage}.py"]
        runpy.run_module(f"stages.{stage}", run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - recorded as the stage's failure
        traceback.print_exc()
        return 1


def main() -> None:
    stage, result, args = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    import torch

    counters.install()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    code = run(stage, args)
    row = {"stage": stage, "exit_code": code, "wall_s": round(time.perf_counter() - start, 2),
           "device": torch.cuda.get_device_name(0) if cuda else "cpu"}
    if cuda:
        row["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 3)
        row["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 3)
    row["counters"] = counters.read()
    result.write_text(json.dumps(row, indent=2) + "\n")
    sys.exit(code)


if __name__ == "__main__":
    main()
