"""What a full run of the pipeline costs, projected from a check run on part of the training split.

    python -m benchmarks.gpu_pipeline.projection RUN/pipeline_check.json [--train-clips N] [--out FILE.md]

The full-depth check runs train on a subset of the training split (the carry to a GPU machine
holds about 540 clips) and the later stages on whatever the subset holds (with the second part of
``gather_gpu_carry.sh``: the whole dev and test splits and the default psychometric bases, so
they need no projection). Only the training loop grows with the training split: the train
stage's time is projected as its start-up and loading (the process's wall time less
``train_wall_s`` of ``logs/train_timing.json``) plus its loop scaled by the ratio of training
clips; its dev passes, inside the loop, are scaled too, which overstates them by at most that
ratio when dev is whole already. Dev and test splits held only in part are named in the table's
heading, not scaled.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from qvad.common.atomic import write_text

STAGES = ("train", "optimize_prompt", "evaluate", "psychometric")


def split_sizes(repo: Path) -> dict[str, int]:
    """Rows of each split of a finished CPU run in ``repo`` (those it has)."""
    sizes = {}
    for split in ("train", "dev", "test"):
        path = repo / "data/splits" / f"{split}.csv"
        if path.is_file():
            sizes[split] = len(pd.read_csv(path))
    return sizes


def partial_splits(report: dict, sizes: dict[str, int]) -> list[str]:
    """'dev 60 of 486'-style notes for the evaluation splits the run holds only part of."""
    data = report["data"]
    return [f"{split} {data[split]['clips']} of {sizes[split]}" for split in ("dev", "test")
            if split in data and split in sizes and int(data[split]["clips"]) < sizes[split]]


def project(report: dict, train_clips: int) -> dict[str, dict]:
    """Per configuration: each stage's measured wall time (with start-up) and the projection."""
    data = report["data"]
    measured_train = int(data["train"]["clips"])
    out = {}
    for name, entry in report["configurations"].items():
        stages, timing = entry.get("stages", {}), entry.get("train_timing", {})
        rows = {}
        for stage in STAGES:
            row = stages.get(stage)
            if not row or row.get("exit_code") != 0:
                rows[stage] = {"measured_s": None}
                continue
            wall = float(row.get("process_wall_s", row["wall_s"]))
            projected = wall
            if stage == "train" and timing.get("train_wall_s"):
                loop = float(timing["train_wall_s"])
                projected = (wall - loop) + loop * train_clips / measured_train
            rows[stage] = {"measured_s": round(wall, 1), "projected_s": round(projected, 1),
                           "peak_allocated_gib": row.get("peak_allocated_gib"),
                           "peak_reserved_gib": row.get("peak_reserved_gib")}
        done = [r for r in rows.values() if r.get("measured_s") is not None]
        out[name] = {"stages": rows, "complete": len(done) == len(STAGES),
                     "measured_total_s": round(sum(r["measured_s"] for r in done), 1),
                     "projected_total_s": round(sum(r["projected_s"] for r in done), 1)}
    return out


def markdown(report: dict, projection: dict, train_clips: int, partial: list[str]) -> str:
    data = report["data"]
    sizes = ", ".join(f"{split} {data[split]['clips']}" for split in ("train", "dev", "test") if split in data)
    lines = [f"Device: {report['environment'].get('device', 'cpu')}; depth {report['depth']}; clips {sizes}; "
             f"psychometric bases per class {data.get('psychometric_bases_per_class')}. Projection: the train "
             f"stage's loop scaled to {train_clips} training clips. Seconds include each process's start-up."
             + (f" Not projected: the later stages ran on {', '.join(partial)} only." if partial else ""), "",
             "| configuration | stage | measured s | projected s | peak allocated / reserved GiB |",
             "|---|---|---|---|---|"]
    for name, entry in projection.items():
        for stage, row in entry["stages"].items():
            if row["measured_s"] is None:
                lines.append(f"| {name} | {stage} | not run or failed | | |")
                continue
            lines.append(f"| {name} | {stage} | {row['measured_s']} | {row['projected_s']} | "
                         f"{row['peak_allocated_gib']} / {row['peak_reserved_gib']} |")
        lines.append(f"| {name} | **total** | {entry['measured_total_s']} | {entry['projected_total_s']}"
                     f"{'' if entry['complete'] else ' (stages missing)'} | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path, help="pipeline_check.json of a check run")
    ap.add_argument("--train-clips", type=int, default=None,
                    help="training clips to project to (default: data/splits/train.csv of this checkout)")
    ap.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = ap.parse_args(argv)
    sizes = split_sizes(Path.cwd())
    train_clips = args.train_clips or sizes.get("train")
    if not train_clips:
        ap.error("--train-clips: no data/splits/train.csv here to take the default from")
    report = json.loads(args.report.read_text())
    text = markdown(report, project(report, train_clips), train_clips, partial_splits(report, sizes))
    if args.out:
        write_text(args.out, text)
    print(text, end="")


if __name__ == "__main__":
    main()
