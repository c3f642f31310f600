"""Seed variance from the pipeline itself: aggregate queued `dvc exp run`s into one table.

Queue the runs (docs/results.md, "Seed variance"), e.g. training variance on the same data and test clips:

    for s in 1 2; do dvc exp run --queue -S train.seed=$s; done && dvc queue start -j 1

(or ``-S seed=$s`` to redraw the data and split as well), wait for ``dvc queue status``, then

    python scripts/seed_table.py --out benchmarks/results/seeds.json

It reads the committed baseline and those experiments of the current commit that change only
``seed`` or ``train.seed`` from ``dvc exp show --json``: per run the test balanced accuracy of the model and each baseline,
then mean and standard deviation. When all runs share the same test clips (``train.seed``
runs), it adds the ensemble of the runs' models: mean calibrated P(speech) per clip, read from
each run's ``data/eval/predictions.csv`` through ``dvc.api``, with a group-bootstrap CI.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qvad.analysis import bootstrap, metrics  # noqa: E402
from scripts.compare_runs import predictions  # noqa: E402

SYSTEMS = ("model", "silero", "ten", "webrtc")


def _runs(shown: list[dict]) -> list[dict]:
    """(name, rev, params, eval metrics) of the baseline commit and each of its experiments."""
    runs = []
    for commit in shown:
        if commit.get("rev") == "workspace":
            continue
        entries = [commit] + [rev for exp in (commit.get("experiments") or []) for rev in exp.get("revs", [])]
        for entry in entries:
            data = entry.get("data") or {}
            ev = ((data.get("metrics") or {}).get("metrics/eval.json") or {}).get("data")
            params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
            if ev:
                runs.append({"name": entry.get("name") or data.get("rev", "")[:7], "rev": data.get("rev") or entry.get("rev"),
                             "params": params, "eval": ev})
    return runs


SEED_KEYS = ("seed", "train.seed")
"""The only params a seed run may change; other experiments of the commit are left out."""


def _flat(params: dict, prefix: str = "") -> dict:
    """``{"a.b": value}`` for nested params."""
    out = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        out.update(_flat(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return out


def seed_runs(runs: list[dict]) -> list[dict]:
    """The baseline commit and those experiments whose params differ from it only in SEED_KEYS."""
    base = {k: v for k, v in _flat(runs[0]["params"]).items() if k not in SEED_KEYS}
    return [run for run in runs if {k: v for k, v in _flat(run["params"]).items() if k not in SEED_KEYS} == base]


def per_run_table(runs: list[dict]) -> pd.DataFrame:
    rows = []
    for run in runs:
        row = {"run": run["name"], "seed": run["params"].get("seed"),
               "train_seed": (run["params"].get("train") or {}).get("seed")}
        for system in SYSTEMS:
            m = run["eval"]["systems"].get(system)
            row[system] = m["balanced_accuracy"] if m else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def ensemble(runs: list[dict], n_boot: int, seed: int) -> dict | None:
    """Mean calibrated P(speech) of every run's model on shared test clips, or None if clips differ."""
    frames = [predictions(run["rev"]) for run in runs]
    ids = [tuple(f["clip_id"]) for f in frames]
    if len(set(ids)) != 1:
        return None
    p = np.mean([f["p_speech_calibrated"].to_numpy() for f in frames], axis=0)
    y = (frames[0]["label"] == "speech").to_numpy().astype(int)
    ci = bootstrap.group_bootstrap_ci(metrics.balanced_accuracy, y, (p > 0.5).astype(int),
                                      frames[0]["group"].to_numpy(), n_boot=n_boot, seed=seed)
    return {"runs": len(frames), "balanced_accuracy": round(ci.estimate, 4), "ci95": [round(ci.low, 4), round(ci.high, 4)]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the table as JSON here")
    parser.add_argument("--n-boot", type=int, default=2000)
    args = parser.parse_args(argv)
    shown = json.loads(subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=ROOT,
                                      capture_output=True, text=True, check=True).stdout)
    runs = _runs(shown)
    if not runs:
        raise SystemExit("no run with metrics/eval.json in `dvc exp show`: queue and run the seeds first")
    runs = seed_runs(runs)
    table = per_run_table(runs)
    summary = {s: {"mean": round(float(table[s].mean()), 4), "std": round(float(table[s].std(ddof=1)), 4)
                   if len(table) > 1 else None} for s in SYSTEMS if table[s].notna().any()}
    result = {"runs": table.to_dict("records"), "summary": summary, "ensemble": ensemble(runs, args.n_boot, 0)}
    print(table.to_string(index=False))
    print(json.dumps({"summary": summary, "ensemble": result["ensemble"]}, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
