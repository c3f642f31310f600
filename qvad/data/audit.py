"""The audit stage: fail the pipeline, with a readable report, on any leakage between splits."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from qvad.common.atomic import write_json
from qvad.audio.io import read_wav
from qvad.data.leakage import envelope_fingerprint, run_audit
from qvad.common.params import get
from qvad.data.grouping import SPLITS


def audit(params: dict) -> int:
    """Run the audit stage with ``params`` (params.yaml as a dict)."""
    clips = pd.concat([pd.read_csv(f"data/splits/{s}.csv", keep_default_na=False) for s in SPLITS],
                      ignore_index=True)
    sources = clips["source_id"].unique()
    prints = {sid: envelope_fingerprint(read_wav(Path("data/raw/audio") / f"{sid}.wav")) for sid in sources}
    clips["fingerprint"] = clips["source_id"].map(prints)
    report = run_audit(clips, get(params, "mix"), int(get(params, "audit.min_per_cell")),
                       float(get(params, "audit.max_class_imbalance")), float(get(params, "hygiene.min_speech_frac")))
    write_json("metrics/audit.json", report)
    if not report["passed"]:
        print("AUDIT FAILED: the splits leak or are unfit for evaluation:", file=sys.stderr)
        for finding in report["findings"]:
            print(f"  - {finding}", file=sys.stderr)
        return 1
    print(f"audit passed: {report['clips_per_split']}, zero overlaps")
    return 0

