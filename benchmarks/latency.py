#!/usr/bin/env python3
"""Latency per clip and throughput: the model, Silero, WebRTC and TEN VAD on the same test clips.

The clips are the evaluate stage's own test inputs (data/splits/test.csv: 2 s containers,
normalised), so every system sees exactly what its balanced accuracy in metrics/eval.json was
measured on. Two figures per system, each with its device and thread count:

* single-stream latency: one clip at a time, batch 1, wall time per call (median, mean, p90)
  after a warm-up; what one caller waiting for one answer pays;
* throughput: clips per second at the best batch size from ``--batch-sizes`` (the model:
  clips per forward pass; Silero: a ``[batch, samples]`` tensor through one ``audio_forward``
  call). WebRTC and TEN VAD have no batch entry point, so their throughput is their
  single-stream rate.

What is timed, per clip: the model from the prepared clip to calibrated P(speech) (log-mel,
forward pass, softmax over the two answers: ``Detector.score_prepared``); Silero a whole clip
in ONE call (``model.audio_forward``: the 32 ms windows are looped inside TorchScript, not in
Python) and the clip score; WebRTC its 30 ms frames (mode 3, one C call per frame, as the
baseline scores clips); TEN VAD its 16 ms hops (qvad's TEN VAD wrapper, a fresh instance per
clip). Latency is a property of this benchmark and this machine, not a tracked metric.

Run from the repo root after `dvc repro evaluate`:

    python benchmarks/latency.py --out benchmarks/results/latency_cpu.json          # 2 threads, CPU
    python benchmarks/latency.py --device cuda --out benchmarks/results/latency_cuda.json

Writes the JSON and, beside it, a PNG of test balanced accuracy (metrics/eval.json) against
latency per clip (log axis).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

WARMUP = 3
LABELS = {"model": "model (Qwen2-Audio LoRA)", "silero": "Silero VAD", "webrtc": "WebRTC VAD", "ten": "TEN VAD"}


def _stats(times_s: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(times_s) * 1000.0
    return {"ms_per_clip_median": round(float(np.median(ms)), 4), "ms_per_clip_mean": round(float(ms.mean()), 4),
            "ms_per_clip_p90": round(float(np.percentile(ms, 90)), 4), "clips": int(ms.size)}


def single_stream(fn: Callable[[np.ndarray], object], clips: Sequence[np.ndarray], sync: Callable[[], None]) -> dict:
    """Wall time of ``fn(clip)`` per clip, one at a time, after ``WARMUP`` untimed calls."""
    for x in clips[:WARMUP]:
        fn(x)
    sync()
    times = []
    for x in clips:
        start = time.perf_counter()
        fn(x)
        sync()
        times.append(time.perf_counter() - start)
    return _stats(times)


def throughput(fn: Callable[[list[np.ndarray]], object], clips: Sequence[np.ndarray], batch_sizes: Sequence[int],
               sync: Callable[[], None], min_clips: int) -> dict:
    """Clips per second of ``fn(batch)`` over at least ``min_clips`` clips, per batch size; the best one."""
    by_batch = {}
    for b in batch_sizes:
        reps = max(1, -(-max(min_clips, b * 2) // len(clips)))
        pool = list(clips) * reps
        fn(pool[:b])  # warm-up at this shape
        sync()
        start = time.perf_counter()
        for lo in range(0, len(pool), b):
            fn(pool[lo:lo + b])
        sync()
        by_batch[str(b)] = round(len(pool) / (time.perf_counter() - start), 3)
    best = max(by_batch, key=by_batch.get)
    return {"clips_per_s_by_batch": by_batch, "best_batch": int(best), "clips_per_s": by_batch[best],
            "ms_per_clip": round(1000.0 / by_batch[best], 4)}


def load_clips(n: int, seed: int, csv: str = "data/splits/test.csv") -> tuple[list[np.ndarray], dict]:
    import pandas as pd

    from qvad.audio.io import read_wav

    frame = pd.read_csv(ROOT / csv, keep_default_na=False)
    pick = frame.sample(n=min(n, len(frame)), random_state=seed).sort_index()
    clips = [read_wav(ROOT / p) for p in pick["path"]]
    return clips, {"source": f"{csv} (the evaluate stage's test inputs)", "n": len(clips),
                   "seconds_each": sorted({round(c.size / 16000, 3) for c in clips}),
                   "speech_share": round(float((pick["label"] == "speech").mean()), 3), "seed": seed}


def balanced_accuracy(source: str) -> dict[str, dict]:
    path = ROOT / source
    if source == "none" or not path.exists():
        return {}
    systems = json.loads(path.read_text()).get("systems", {})
    return {k: {"balanced_accuracy": v.get("balanced_accuracy"), "ci95": v.get("balanced_accuracy_ci95")}
            for k, v in systems.items()}


def plot(result: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, m) in enumerate(result["systems"].items()):
        ba = m.get("test_balanced_accuracy")
        if ba is None:
            continue
        color = f"C{i}"
        single = m["single_stream"]["ms_per_clip_median"]
        batched = m["throughput"]["ms_per_clip"]
        ax.plot([single, batched], [ba, ba], color=color, lw=1, alpha=0.6)
        ax.scatter([single], [ba], color=color, s=45, zorder=3,
                   label=f"{LABELS.get(name, name)} ({m['device']}, {m['threads']} thr)")
        ax.scatter([batched], [ba], facecolors="none", edgecolors=color, marker="s", s=45, zorder=3)
        ci = m.get("test_balanced_accuracy_ci95")
        if ci:
            ax.errorbar([single], [ba], yerr=[[ba - ci[0]], [ci[1] - ba]], color=color, capsize=3, lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("latency per clip, ms (log): filled = batch 1, hollow square = best batch")
    ax.set_ylabel("test balanced accuracy")
    ax.set_title(f"accuracy vs latency, {result['clips']['n']} test clips of "
                 f"{result['clips']['seconds_each'][0]:g} s", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)


def random_7b_detector(device: str):
    """Qwen2-Audio-7B's architecture with random bf16 weights and params.yaml's LoRA, as a Detector.

    Built in memory by benchmarks/gpu (no 15 GB checkpoint on disk), loaded through
    qvad.model.loading as every stage loads; the prompt, container and normalisation are
    params.yaml's. Its scores are meaningless; its speed is the 7B's.
    """
    import tempfile

    import yaml

    from benchmarks.gpu.common import Loader, make_config, make_processor, random_state_dict
    from qvad.detector import Detector
    from qvad.detector_config import DetectorConfig, detector_config
    from qvad.model.encoder_truncation import truncate_as_configured
    from qvad.model.lora import apply_lora

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    model_cfg = {**params["model"], "preset": "qwen2-audio-7b-instruct", "quantization": "bf16", "dtype": "bfloat16"}
    processor = make_processor()
    config = make_config(processor, tiny=False)
    state, _ = random_state_dict(config)
    loader = Loader(config, processor, state, Path(tempfile.mkdtemp()), tiny=False)
    model, processor = loader.load("bf16", for_training=False, dtype="bfloat16",
                                   truncate_encoder=model_cfg.get("truncate_encoder", True))
    del state, loader
    model, _ = apply_lora(model, params["lora"], "qwen2-audio-7b-instruct")
    truncate_as_configured(model, model_cfg)
    model.eval()
    cfg = DetectorConfig.from_dict(detector_config({**params, "model": model_cfg}, temperature=1.0), "params.yaml")
    return Detector(model, processor, cfg, device=device, batch_size=1)


def long_audio_speed(det, clips: Sequence[np.ndarray], seconds: float, sync: Callable[[], None]) -> dict:
    """Seconds of audio per second through `qvad predict --segments`' path (decode, windows, batches, segments)."""
    import tempfile

    import soundfile as sf

    pool = np.concatenate(list(clips))
    audio = np.tile(pool, int(np.ceil(seconds * 16000 / pool.size)))[: int(seconds * 16000)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.wav"
        sf.write(path, audio, 16000, subtype="FLOAT")
        list(det.iter_files([path], segments=True))  # warm-up
        sync()
        start = time.perf_counter()
        (res,) = list(det.iter_files([path], segments=True))
        sync()
        wall = time.perf_counter() - start
    return {"audio_s": round(seconds, 1), "window_ms": det.config.window_ms, "hop_ms": det.config.hop_ms,
            "windows": res.windows, "batch": det.batch_size, "wall_s": round(wall, 3),
            "audio_s_per_s": round(seconds / wall, 2), "windows_per_s": round(res.windows / wall, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results/latency_cpu.json")
    ap.add_argument("--model-dir", default="models")
    ap.add_argument("--device", default="cpu", help="the model's device (the VADs run on the CPU)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (model and Silero); params cpu_threads")
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--batch-sizes", type=int, nargs="*", default=None,
                    help="model batch sizes to try (default: 1 4 16 64 on the CPU, 1 16 64 256 512 on a GPU)")
    ap.add_argument("--silero-batch-sizes", type=int, nargs="*", default=[1, 8, 32, 128])
    ap.add_argument("--min-clips", type=int, default=None,
                    help="clips per throughput measurement (default: the clips, at least 2 batches)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["model", "silero", "webrtc", "ten"])
    ap.add_argument("--clips-csv", default="data/splits/test.csv", help="clip list (columns path, label)")
    ap.add_argument("--ba-from", default="metrics/eval.json", help="balanced accuracies to plot ('none': skip)")
    ap.add_argument("--random-7b", action="store_true",
                    help="time the Qwen2-Audio-7B architecture with random bf16 weights + LoRA instead of "
                         "--model-dir (latency only: its accuracy is not the trained model's)")
    ap.add_argument("--long-seconds", type=float, default=120.0,
                    help="also time `--segments` windowing of this much audio (0: skip)")
    args = ap.parse_args(argv)

    from qvad.common.cpu_numerics import pin_cpu_numerics

    pin_cpu_numerics(args.threads)
    import torch

    clips, clip_info = load_clips(args.clips, args.seed, args.clips_csv)
    min_clips = args.min_clips or len(clips)
    ba = balanced_accuracy(args.ba_from)
    cuda = args.device.startswith("cuda")
    systems: dict[str, dict] = {}
    nosync = lambda: None  # noqa: E731

    if "model" not in args.skip:
        from qvad.cli import _quiet_libraries
        from qvad.detector import Detector

        _quiet_libraries()
        if args.random_7b:
            det = random_7b_detector(args.device)
        else:
            det = Detector.from_dir(args.model_dir, device=args.device, batch_size=1)
        torch.set_num_threads(args.threads)
        sync = torch.cuda.synchronize if cuda else nosync

        def one(x):
            det.batch_size = 1
            return det.score_prepared([x])

        def batch(xs):
            det.batch_size = len(xs)
            return det.score_prepared(xs)

        sizes = args.batch_sizes or ([1, 16, 64, 256, 512] if cuda else [1, 4, 16, 64])
        systems["model"] = {"device": torch.cuda.get_device_name() if cuda else "cpu", "threads": args.threads,
                            "preset": det.config.model.get("preset"), "dtype": det.config.model.get("dtype"),
                            "quantization": det.config.model.get("quantization"),
                            "timed": "Detector.score_prepared: log-mel + one forward + calibrated P(speech)",
                            "single_stream": single_stream(one, clips, sync),
                            "throughput": throughput(batch, clips, sizes, sync, min_clips)}
        if args.random_7b:
            systems["model"]["weights"] = "random (Qwen2-Audio-7B-Instruct shapes): latency only"
            ba.pop("model", None)
        if args.long_seconds > 0:
            det.batch_size = systems["model"]["throughput"]["best_batch"]
            systems["model"]["long_audio"] = long_audio_speed(det, clips, args.long_seconds, sync)
        if cuda:
            systems["model"]["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        del det

    if "silero" not in args.skip:
        from silero_vad import load_silero_vad

        model = load_silero_vad(onnx=False)
        torch.set_num_threads(args.threads)  # silero_vad sets 1 thread on import; same budget as the model

        def silero_batch(xs):
            with torch.inference_mode():
                probs = model.audio_forward(torch.from_numpy(np.stack(xs)), 16000)
            return probs.max(dim=1).values.numpy()

        systems["silero"] = {"device": "cpu", "threads": torch.get_num_threads(),
                             "timed": "one model.audio_forward call per clip (windows looped inside TorchScript) "
                                      "+ the clip score",
                             "single_stream": single_stream(lambda x: silero_batch([x]), clips, nosync),
                             "throughput": throughput(silero_batch, clips, args.silero_batch_sizes, nosync, min_clips)}

    if "webrtc" not in args.skip:
        from qvad.audio.vad import webrtc_frames

        def webrtc(x):
            return webrtc_frames(x, 3, 30).mean()

        res = single_stream(webrtc, clips, nosync)
        systems["webrtc"] = {"device": "cpu", "threads": 1, "timed": "webrtc_frames(mode 3, 30 ms): one C call "
                             "per frame + the voiced fraction; no batch entry point",
                             "single_stream": res,
                             "throughput": {"clips_per_s": round(1000.0 / res["ms_per_clip_mean"], 3),
                                            "best_batch": 1, "ms_per_clip": res["ms_per_clip_mean"]}}

    if "ten" not in args.skip:
        try:
            from qvad.audio.ten_vad import ten_vad_probs as ten

            ten(clips[0])
        except Exception as exc:  # not installed, or its C++ runtime is missing
            print(f"TEN VAD skipped: {exc}", file=sys.stderr)
        else:
            res = single_stream(lambda x: ten(x).max(), clips, nosync)
            systems["ten"] = {"device": "cpu", "threads": 1, "timed": "ten_vad_probs (hop 256, fresh instance per "
                              "clip) + the clip score; no batch entry point",
                              "licence": "Apache-2.0 with Agora's additional conditions",
                              "single_stream": res,
                              "throughput": {"clips_per_s": round(1000.0 / res["ms_per_clip_mean"], 3),
                                             "best_batch": 1, "ms_per_clip": res["ms_per_clip_mean"]}}

    for name, m in systems.items():
        if name in ba:
            m["test_balanced_accuracy"] = ba[name]["balanced_accuracy"]
            m["test_balanced_accuracy_ci95"] = ba[name]["ci95"]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    result = {
        "what": "latency per clip (batch 1) and best-batch throughput on the same test clips; BA from metrics/eval.json",
        "clips": clip_info,
        "systems": systems,
        "machine": {"cpu": cpu, "cores_visible": os.cpu_count(), "platform": platform.platform(),
                    "torch": torch.__version__, "gpu": torch.cuda.get_device_name() if cuda else None},
        "balanced_accuracy_source": "metrics/eval.json" if ba else None,
    }
    from qvad.common.atomic import write_json

    out = Path(args.out)
    write_json(out, result)
    if any("test_balanced_accuracy" in m for m in systems.values()):
        plot(result, out.with_suffix(".png"))
    print(f"{'system':8s} {'device':>10s} {'thr':>4s} {'batch-1 ms (median)':>20s} {'best batch':>10s} "
          f"{'clips/s':>9s} {'BA':>6s}")
    for name, m in systems.items():
        t = m["throughput"]
        print(f"{name:8s} {str(m['device'])[:10]:>10s} {m['threads']:4d} {m['single_stream']['ms_per_clip_median']:20.3f} "
              f"{t['best_batch']:10d} {t['clips_per_s']:9.1f} {m.get('test_balanced_accuracy') or float('nan'):6.3f}")
    print(f"wrote {out}" + (f" and {out.with_suffix('.png')}" if out.with_suffix(".png").exists() else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
