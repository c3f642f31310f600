"""Benchmark: mix_snr rendering speed (clips per second), 1 process vs all cores, side by side.

Needs data/hygiene from `dvc repro vad_hygiene`. Renders the default design's plan in memory
(nothing is written), so it measures cutting, band-limiting, mixing and containers.

    python benchmarks/mix_throughput.py [--clips 600]
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial

from qvad.data.manifest import read_manifest
from qvad.data.mix_plan import plan_clips, plan_groups, split_pools
from qvad.common.params import get, load_params
from qvad.data.render import render_clip


def _render(row: dict, cfg: dict, min_voiced: float) -> int:
    return render_clip(row, cfg, min_voiced)[0].size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=600)
    args = ap.parse_args()
    params = load_params()
    cfg, seed = dict(get(params, "mix")), int(params["seed"])
    segments = read_manifest("data/hygiene/manifest.csv", ["seg_id", "group", "audio_md5"])
    sources, noise = split_pools(segments, cfg["noise_packages"])
    t0 = time.perf_counter()
    plan = plan_clips(sources, noise, plan_groups(sources, noise, get(params, "split.fractions"), seed), cfg, seed)
    plan_s = time.perf_counter() - t0
    rows = plan.sample(n=min(args.clips, len(plan)), random_state=seed).to_dict("records")
    work = partial(_render, cfg=cfg, min_voiced=float(get(params, "hygiene.min_speech_frac")))
    print(f"plan: {len(plan)} clips in {plan_s:.2f} s")
    for row in rows[:32]:  # warm the page cache and lazy imports so both timings start equal (fork)
        work(row)
    for workers in (1, os.cpu_count() or 1):
        t0 = time.perf_counter()
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(work, rows, chunksize=16))
        dt = time.perf_counter() - t0
        print(f"render, {workers} process(es): {len(rows) / dt:7.1f} clips/s ({len(rows)} clips, {dt:.2f} s)")


if __name__ == "__main__":
    main()
