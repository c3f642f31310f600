"""Training curves through transformers' DVCLive integration, kept byte-stable and resumable.

transformers' :class:`~transformers.integrations.DVCLiveCallback` is what ``report_to="dvclive"``
installs; three things are adjusted so that `dvc repro` stays reproducible and `dvc plots` reads
the curves against the optimiser step:

- each row is written at the Trainer's ``global_step`` (the stock callback counts log calls, so
  dev loss and dev balanced accuracy, logged in two calls, would land on different steps);
- wall-clock entries (``*_runtime``, ``*_per_second``) and FLOP counts are not logged: they differ
  between runs of the same params and would make every rerun rewrite tracked files; nor is the
  end-of-training mean ``train_loss``, a one-point series beside the per-step ``loss``;
- the TrainingArguments are not logged as DVCLive params: params.yaml already holds every knob.

On resume, rows after the resumed checkpoint's step are dropped first, so the curve shows each
step once.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from dvclive import Live
from transformers.integrations import DVCLiveCallback

UNSTABLE_SUFFIXES = ("_runtime", "_per_second", "total_flos")
"""Log keys that measure the machine, not the model."""
SUMMARY_KEYS = ("train_loss",)


def _logged(key: str) -> bool:
    return not key.endswith(UNSTABLE_SUFFIXES) and key not in SUMMARY_KEYS


def trim_history(live_dir: Path, max_step: int) -> None:
    """Drop every logged row after ``max_step`` (a run killed after its last checkpoint)."""
    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        with open(tsv, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if not rows:
            continue
        keep = [r for r in rows if int(r["step"]) <= max_step]
        with open(tsv, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, list(rows[0]), delimiter="\t", lineterminator=os.linesep)
            writer.writeheader()
            writer.writerows(keep)


class StepDVCLiveCallback(DVCLiveCallback):
    """transformers' DVCLive callback, writing at the optimiser step and only run-stable values."""

    def __init__(self, live_dir: Path, resume_step: int | None) -> None:
        if resume_step is not None:
            trim_history(live_dir, resume_step)
        # dvcyaml=False: dvc.yaml declares these metrics and plots itself; no experiment of its own.
        super().__init__(live=Live(dir=str(live_dir), resume=resume_step is not None, dvcyaml=False,
                                   save_dvc_exp=False))

    def setup(self, args, state, model) -> None:  # noqa: ANN001 (transformers' signature)
        self._initialized = True

    def on_log(self, args, state, control, model=None, logs=None, **kwargs) -> None:  # noqa: ANN001
        self.live.step = state.global_step
        super().on_log(args, state, control, model=model, logs={k: v for k, v in (logs or {}).items()
                                                                 if _logged(k)}, **kwargs)
