"""The JSON report: its opening fields, the summary (best rows, targets met) and the printed table."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from .common import NAIVE_NOTES, TARGETS, best, environment


def new_report(lora_cfg: dict, trunc_multiple: int) -> dict[str, Any]:
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(),
        "targets": TARGETS,
        "naive_baselines_from_notes": NAIVE_NOTES,
        "lora": lora_cfg,
        "truncate_multiple": trunc_multiple,
        "inference": [],
        "training": [],
        "notes": [],
    }


def _best_of(rows: list, configs: tuple[str, ...], cap_gib: float) -> dict | None:
    """The fastest row (peak within ``cap_gib``) over several configurations."""
    return max([r for r in (best(rows, c, cap_gib) for c in configs) if r],
               key=lambda r: r["clips_per_s"], default=None)


def best_rows(report: dict) -> dict[str, dict | None]:
    inf, tr = report["inference"], report["training"]
    cap = TARGETS["qlora_nf4_peak_gib"]
    return {
        "inference_1s": best(inf, "scorer_1s"),
        "inference_2s_container": best(inf, "scorer_2s_container"),
        "naive_inference_1s": best(inf, "naive_hf_30s_full_logits_1s"),
        "lora_bf16_1s": best(tr, "lora_bf16_1s"),
        "lora_bf16_2s_container": best(tr, "lora_bf16_2s_container"),
        "naive_lora_bf16_1s": best(tr, "naive_lora_bf16_1s_ckpt_30s_cpu_mel"),
        "qlora_nf4_1s": _best_of(tr, ("qlora_nf4_1s", "qlora_nf4_1s_ckpt"), cap),
        "qlora_nf4_2s_container": _best_of(tr, ("qlora_nf4_2s_container", "qlora_nf4_2s_container_ckpt"), cap),
        "qlora_nf4_fp32_upcast_1s": best(tr, "qlora_nf4_1s_ckpt_fp32_upcast", cap),
    }


def targets_met(pick: dict[str, dict | None]) -> dict[str, bool]:
    met = {}
    if pick["inference_1s"]:
        met["inference"] = pick["inference_1s"]["clips_per_s"] >= TARGETS["inference"]
    if pick["lora_bf16_1s"]:
        met["lora_bf16"] = pick["lora_bf16_1s"]["clips_per_s"] >= TARGETS["lora_bf16"]
    if pick["qlora_nf4_1s"]:
        met["qlora_nf4"] = (pick["qlora_nf4_1s"]["clips_per_s"] >= TARGETS["qlora_nf4"]
                            and pick["qlora_nf4_1s"].get("peak_alloc_gib", 0) <= TARGETS["qlora_nf4_peak_gib"])
    return met


def summarize(report: dict) -> dict:
    pick = best_rows(report)
    return {"best": pick, "targets_met": targets_met(pick)}


def print_table(report: dict) -> None:
    print("\n| config | batch | clips/s | peak alloc GiB |")
    print("|---|---|---|---|")
    for row in report["inference"] + report["training"]:
        value = row.get("clips_per_s", row.get("error", row.get("skipped", "")))
        print(f"| {row['config']} | {row.get('batch')} | {value} | {row.get('peak_alloc_gib', '')} |")
    print(f"\ntargets met: {report['summary']['targets_met']}")
