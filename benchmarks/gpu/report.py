"""The JSON report: its opening fields, the summary (each figure by its target, limit, landed and
naive path of the same run) and the printed table."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from .common import LANDED_H200, TARGETS, best, environment

# target key -> (configs that may meet it, peak cap, landed config, naive config)
FIGURES = {
    "scorer_1s": (("scorer_1s",), None, "landed_scorer_1s", "naive_hf_30s_full_logits_1s"),
    "scorer_2s_container": (("scorer_2s_container",), None, None, None),
    "scorer_1s_question_first": (("scorer_1s_question_first",), None, "landed_scorer_1s",
                                 "naive_hf_30s_full_logits_1s"),
    "lora_bf16_1s": (("lora_bf16_1s",), None, "landed_lora_bf16_1s", "naive_lora_bf16_1s_ckpt_30s_cpu_mel"),
    "qlora_nf4_1s": (("qlora_nf4_1s", "qlora_nf4_1s_ckpt"), TARGETS["qlora_nf4_peak_gib"],
                     "landed_qlora_nf4_1s_ckpt", "naive_qlora_nf4_1s_ckpt_fp32_upcast"),
}
OTHER = ("scorer_2s_container_question_first", "lora_bf16_1s_question_first", "lora_bf16_2s_container",
         "qlora_nf4_1s_question_first", "qlora_nf4_1s_question_first_ckpt", "qlora_nf4_2s_container",
         "qlora_nf4_2s_container_ckpt")


def new_report(lora_cfg: dict, trunc_multiple: int) -> dict[str, Any]:
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(),
        "targets": TARGETS,
        "landed_h200_from_issue": LANDED_H200,
        "lora": lora_cfg,
        "truncate_multiple": trunc_multiple,
        "inference": [],
        "training": [],
        "notes": [],
    }


def _rows(report: dict) -> list[dict]:
    return report["inference"] + report["training"]


def _best_of(rows: list, configs: tuple[str, ...], cap_gib: float | None) -> dict | None:
    """The fastest row (peak within ``cap_gib``) over several configurations."""
    return max([r for r in (best(rows, c, cap_gib) for c in configs) if r],
               key=lambda r: r["clips_per_s"], default=None)


def _brief(row: dict | None) -> dict | None:
    if row is None:
        return None
    keys = ("config", "batch", "clips_per_s", "mfu", "limit_clips_per_s", "tflop_per_clip", "peak_alloc_gib", "tokens")
    return {k: row[k] for k in keys if k in row}


def summarize(report: dict) -> dict:
    rows = _rows(report)
    figures = {}
    for key, (configs, cap, landed, naive) in FIGURES.items():
        top = _best_of(rows, configs, cap)
        entry = {"target": TARGETS[key], "measured": _brief(top),
                 "landed_same_run": _brief(best(rows, landed)) if landed else None,
                 "naive_same_run": _brief(best(rows, naive)) if naive else None}
        if top:
            entry["met"] = top["clips_per_s"] >= TARGETS[key] and (
                cap is None or top.get("peak_alloc_gib", 0) <= cap)
        figures[key] = entry
    others = {c: _brief(best(rows, c, TARGETS["qlora_nf4_peak_gib"] if "nf4" in c else None)) for c in OTHER}
    return {"figures": figures, "other_best": {k: v for k, v in others.items() if v},
            "targets_met": {k: v.get("met") for k, v in figures.items()}}


def print_table(report: dict) -> None:
    print("\n| config | layout | batch | clips/s | MFU | limit | TFLOP/clip | peak GiB |")
    print("|---|---|---|---|---|---|---|---|")
    for row in _rows(report):
        value = row.get("clips_per_s", row.get("error", row.get("skipped", "")))
        print(f"| {row['config']} | {row.get('layout', '')} | {row.get('batch')} | {value} | {row.get('mfu', '')} | "
              f"{row.get('limit_clips_per_s', '')} | {row.get('tflop_per_clip', '')} | {row.get('peak_alloc_gib', '')} |")
    print("\n| figure | measured | target | MFU | limit | landed (same run) | naive (same run) |")
    print("|---|---|---|---|---|---|---|")
    for key, f in report["summary"]["figures"].items():
        m, landed, naive = f["measured"] or {}, f["landed_same_run"] or {}, f["naive_same_run"] or {}
        print(f"| {key} | {m.get('clips_per_s')} (b{m.get('batch')}, {m.get('peak_alloc_gib')} GiB) | {f['target']} | "
              f"{m.get('mfu')} | {m.get('limit_clips_per_s')} | {landed.get('clips_per_s')} | {naive.get('clips_per_s')} |")
    print(f"\ntargets met: {report['summary']['targets_met']}")
