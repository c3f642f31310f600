"""The data-scale curve: test balanced accuracy against the number of training speech groups.

Queue the points with DVC's experiment machinery (docs/metrics.md "Data-scale curve"), e.g.

    for n in 4 8 16; do for s in 1 2; do
      dvc exp run --queue -S split.max_train_speech_groups=$n -S train.seed=$s evaluate; done; done
    for s in 1 2; do dvc exp run --queue -S train.seed=$s evaluate; done   # all groups
    dvc queue start -j 1

then, once ``dvc queue status`` shows them done,

    python scripts/data_scale.py --rev HEAD --png plots/data_scale.png --out metrics/data_scale.json

It reads ``dvc exp show --json`` (the experiments of ``--rev`` and that commit itself), keeps the
runs whose params differ from the commit's only in ``split.max_train_speech_groups`` and
``train.seed``, takes each run's number of training speech groups from its own audit
(``metrics/audit.json``: ``groups_per_split["train/speech"]``), and writes per point the model's
and Silero's test balanced accuracy over the training seeds, plus a least-squares line of the
model's BA on log2(groups) and where that line reaches at ``--extrapolate`` groups. Silero does
not train: its BA changes only with the test clips, which the knob never touches, so its line is
flat by construction (a check that the test set is the same at every point).
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

from scripts.seed_table import _flat  # noqa: E402

VARIED = ("split.max_train_speech_groups", "train.seed")
"""The only params a point of the curve may change."""
SYSTEMS = ("model", "silero")
UNFINISHED = ("queued", "running", "failed")
"""Executor states of experiments without results of their own: a running one shows the metrics
files of the commit it started from, so it must not be read as a run."""


def finished_runs(shown: list[dict]) -> list[dict]:
    """(name, params, eval.json, audit.json) of each commit in ``shown`` and of its finished experiments."""
    runs = []
    for commit in shown:
        if commit.get("rev") == "workspace":
            continue
        entries = [commit] + [exp["revs"][0] for exp in (commit.get("experiments") or [])
                              if exp.get("revs") and ((exp.get("executor") or {}).get("state") not in UNFINISHED)]
        for entry in entries:
            data = entry.get("data") or {}
            found = {key: ((data.get("metrics") or {}).get(f"metrics/{key}.json") or {}).get("data")
                     for key in ("eval", "audit")}
            if found["eval"]:
                runs.append({"name": entry.get("name") or str(data.get("rev", ""))[:7],
                             "params": ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {},
                             **found})
    return runs


def curve_runs(shown: list[dict]) -> pd.DataFrame:
    """One row per run of the curve: name, train seed, training speech groups, each system's BA and AUC.

    The first run (the commit itself) fixes every param but VARIED; runs that differ elsewhere
    are left out.
    """
    runs = finished_runs(shown)
    if not runs:
        raise SystemExit("no run with metrics/eval.json in `dvc exp show`: queue and run the points first")
    base = {k: v for k, v in _flat(runs[0]["params"]).items() if k not in VARIED}
    rows = []
    for run in runs:
        flat = _flat(run["params"])
        if {k: v for k, v in flat.items() if k not in VARIED} != base:
            continue
        groups = ((run["audit"] or {}).get("groups_per_split") or {}).get("train/speech")
        if groups is None:
            raise SystemExit(f"{run['name']}: no groups_per_split['train/speech'] in its metrics/audit.json")
        train_seed = flat.get("train.seed")
        row = {"run": run["name"], "train_seed": int(run["params"]["seed"] if train_seed is None else train_seed),
               "max_train_speech_groups": flat.get("split.max_train_speech_groups"),
               "train_speech_groups": int(groups)}
        for system in SYSTEMS:
            m = run["eval"]["systems"][system]
            row[f"{system}_balanced_accuracy"] = m["balanced_accuracy"]
            row[f"{system}_roc_auc"] = m.get("roc_auc")  # absent in runs made before the ranking metrics
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["train_speech_groups", "train_seed", "run"]).reset_index(drop=True)


def seed_table_runs(path: Path, groups: int) -> pd.DataFrame:
    """All-groups runs of other training seeds from a committed ``scripts/seed_table.py`` output.

    Only its ``train.seed`` runs are taken (same data, split and test clips as the commit); the
    caller vouches that they were made with this code and data (docs/metrics.md says when).
    """
    rows = [{"run": f"{path.name}:{r['run']}", "train_seed": int(r["train_seed"]), "max_train_speech_groups": None,
             "train_speech_groups": groups, **{f"{s}_balanced_accuracy": r[s] for s in SYSTEMS},
             **{f"{s}_roc_auc": None for s in SYSTEMS}}
            for r in json.loads(path.read_text())["runs"] if r.get("train_seed") == r.get("train_seed")  # not NaN
            and r.get("train_seed") is not None]
    return pd.DataFrame(rows)


def summarize(table: pd.DataFrame, extrapolate: int) -> dict:
    """Per point: the runs and mean / std / range of each system's BA; the log-linear fit of the model's BA."""
    points = []
    for groups, rows in table.groupby("train_speech_groups"):
        point = {"train_speech_groups": int(groups), "train_seeds": sorted(int(s) for s in rows["train_seed"]),
                 "runs": rows["run"].tolist()}
        for system in SYSTEMS:
            ba = rows[f"{system}_balanced_accuracy"].to_numpy(dtype=float)
            point[system] = {"balanced_accuracy_mean": round(float(ba.mean()), 4),
                             "balanced_accuracy_std": round(float(ba.std(ddof=1)), 4) if ba.size > 1 else None,
                             "balanced_accuracy_runs": [round(float(v), 4) for v in ba]}
        points.append(point)
    out: dict = {"points": points}
    if table["train_speech_groups"].nunique() >= 2:
        from scipy import stats

        x, y = np.log2(table["train_speech_groups"].to_numpy(dtype=float)), table["model_balanced_accuracy"].to_numpy()
        fit = stats.linregress(x, y)
        half = float(stats.t.ppf(0.975, len(x) - 2) * fit.stderr) if len(x) > 2 else float("nan")
        out["model_log2_fit"] = {
            "what": "least squares over every run: model BA = intercept + slope * log2(training speech groups); "
                    "slope CI from the runs' scatter (seeds and points), t with n - 2 df",
            "runs": int(len(x)), "slope_per_doubling": round(float(fit.slope), 4),
            "slope_ci95": [round(float(fit.slope) - half, 4), round(float(fit.slope) + half, 4)] if half == half else None,
            "intercept": round(float(fit.intercept), 4),
            f"at_{extrapolate}_groups": round(float(fit.intercept + fit.slope * np.log2(extrapolate)), 4)}
    return out


def plot(table: pd.DataFrame, summary: dict, extrapolate: int, png: Path) -> None:
    """BA per run (dots), mean per point (line) for the model and Silero; the fit carried to ``extrapolate``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for system, colour in (("model", "tab:blue"), ("silero", "tab:orange")):
        ax.scatter(table["train_speech_groups"], table[f"{system}_balanced_accuracy"], color=colour, alpha=0.5, s=18)
        xs = [p["train_speech_groups"] for p in summary["points"]]
        ax.plot(xs, [p[system]["balanced_accuracy_mean"] for p in summary["points"]], color=colour, marker="o",
                label=f"{system} (mean over training seeds)" if system == "model" else "silero (does not train)")
    fit = summary.get("model_log2_fit")
    if fit:
        grid = np.geomspace(table["train_speech_groups"].min(), extrapolate, 50)
        ax.plot(grid, fit["intercept"] + fit["slope_per_doubling"] * np.log2(grid), color="tab:blue", ls="--", lw=1,
                label=f"log2 fit, {fit[f'at_{extrapolate}_groups']:.3f} at {extrapolate}")
    ax.axhspan(0.90, 0.95, color="grey", alpha=0.15, label="upstream claim at 50+ speakers")
    ax.set_xscale("log", base=2)
    ticks = sorted({*table["train_speech_groups"].astype(int), extrapolate})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("training speech groups (speakers)")
    ax.set_ylabel("test balanced accuracy")
    ax.set_title("data scale: dev and test fixed, non-speech training groups all kept")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120, metadata={"Software": None})
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD", help="the commit whose experiments form the curve")
    parser.add_argument("--out", type=Path, help="write the table and summary as JSON here")
    parser.add_argument("--png", type=Path, help="write the plot here")
    parser.add_argument("--extrapolate", type=int, default=50, help="groups to carry the log-linear fit to")
    parser.add_argument("--seed-table", type=Path, default=None,
                        help="add the all-groups train.seed runs of this seed_table.py output that the "
                             "experiments lack (e.g. benchmarks/results/seeds.json)")
    args = parser.parse_args(argv)
    shown = json.loads(subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json", "--rev", args.rev],
                                      cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    table = curve_runs(shown)
    if args.seed_table:
        full = int(table["train_speech_groups"].max())
        extra = seed_table_runs(args.seed_table, full)
        have = set(table.loc[table["train_speech_groups"] == full, "train_seed"])
        table = pd.concat([table, extra[~extra["train_seed"].isin(have)]], ignore_index=True).sort_values(
            ["train_speech_groups", "train_seed", "run"]).reset_index(drop=True)
    summary = summarize(table, args.extrapolate)
    print(table.to_string(index=False))
    print(json.dumps({k: v for k, v in summary.items() if k != "points"}, indent=2))
    if args.png:
        plot(table, summary, args.extrapolate, args.png)
    if args.out:
        from qvad.common.atomic import write_json

        write_json(args.out, {"runs": table.replace({np.nan: None}).to_dict("records"), **summary,
                              "command": " ".join(["python scripts/data_scale.py", *(argv or sys.argv[1:])])})
    return 0


if __name__ == "__main__":
    sys.exit(main())
