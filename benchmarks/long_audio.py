#!/usr/bin/env python3
"""Long audio with known speech boundaries: `qvad predict --segments` against Silero's own segments.

From TEST-split sources only (data/mixed/groups.csv: kind=source, split=test; segments from
data/hygiene/manifest.csv) this builds a few minutes of audio that alternates speech runs
(2-6 s: consecutive voiced regions of one test speaker, butt-joined with 5 ms fades) and
non-speech runs (2-8 s: a cut of a test music track, a string of test sound effects, or a
near-silent noise floor), each run at its own level (-23 dBFS RMS +/- 6 dB, the floor at
-55 dBFS). The reference is the speech runs' start and end. Noisy versions add the TEST noise
pool (lincity ambience, the pipeline's noise sources of the test split) at a few SNRs,
measured against the power of the speech runs.

Systems, on exactly the same samples:
* model: ``qvad predict --segments`` itself (qvad.cli.main, all segment options at their
  defaults: window/hop from models/detector.json, Silero's post-processing defaults);
* silero: ``silero_vad.get_speech_timestamps(audio, model)`` with its defaults;
* ten_vad (when importable): TEN VAD's 16 ms probabilities, paired into 32 ms frames (mean),
  through the same Silero post-processing (qvad.segments.speech_segments).

Scores per version, in the field's own terms: pyannote.metrics' detection error rate (false alarm
plus miss over reference speech), detection precision and recall, at collars 0 and 0.25 s
(pyannote's collar: the total width left unscored around each reference boundary, 0.125 s on
either side), over the whole recording. Beside them: frame-level (10 ms) precision / recall /
F1 of the speech class, and the boundary error (each true onset/offset to the nearest
hypothesised onset/offset). Run from the repo root after `dvc repro evaluate`:

    python benchmarks/long_audio.py --out benchmarks/results/long_audio.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import soundfile as sf  # noqa: E402

from qvad import SAMPLE_RATE  # noqa: E402

FADE = int(0.005 * SAMPLE_RATE)
SPEECH_RUN_S = (2.0, 6.0)
NONSPEECH_RUN_S = (2.0, 8.0)
LEVEL_DBFS, LEVEL_SPREAD_DB, FLOOR_DBFS = -23.0, 6.0, -55.0
MUSIC_MIN_S = 20.0  # non-speech sources at least this long are "music"; shorter ones are effects


# ---------------------------------------------------------------------------------------------
# building the recording

def split_sources(root: Path, split: str = "test") -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(speech segments, non-speech segments, noise segments) whose groups are in ``split`` only."""
    groups = pd.read_csv(root / "data/mixed/groups.csv")
    segs = pd.read_csv(root / "data/hygiene/manifest.csv")
    test_src = set(groups.loc[(groups["kind"] == "source") & (groups["split"] == split), "group"])
    test_noise = set(groups.loc[(groups["kind"] == "noise") & (groups["split"] == split), "group"])
    other = set(groups.loc[groups["split"] != split, "group"])
    if test_src & other or test_noise & other:
        raise SystemExit(f"a group is in the {split} split and another split: refusing to build {split} audio")
    segs = segs.assign(length_s=segs["seg_end_s"] - segs["seg_start_s"])
    speech = segs[segs["group"].isin(test_src) & (segs["label"] == "speech")]
    nonspeech = segs[segs["group"].isin(test_src) & (segs["label"] == "nonspeech")]
    noise = segs[segs["group"].isin(test_noise)]
    if speech.empty or nonspeech.empty:
        raise SystemExit(f"no {split}-split speech or non-speech segments: run `dvc repro mix_snr` first")
    return speech.reset_index(drop=True), nonspeech.reset_index(drop=True), noise.reset_index(drop=True)


def _read(row: pd.Series, root: Path, start_s: float | None = None, length_s: float | None = None) -> np.ndarray:
    start = row["seg_start_s"] if start_s is None else start_s
    stop = row["seg_end_s"] if length_s is None else min(start + length_s, row["seg_end_s"])
    x, sr = sf.read(root / row["path"], start=int(round(start * SAMPLE_RATE)), stop=int(round(stop * SAMPLE_RATE)),
                    dtype="float32", always_2d=False)
    if sr != SAMPLE_RATE:
        raise SystemExit(f"{row['path']}: expected the pipeline's 16 kHz, found {sr} Hz")
    return x


def _fade(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    n = min(FADE, x.size // 2)
    if n:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n, dtype=np.float32))
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def _at_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return (x * (10 ** (dbfs / 20) / rms)).astype(np.float32) if rms > 0 else x


def speech_run(speech: pd.DataFrame, root: Path, rng: np.random.Generator, target_s: float) -> tuple[np.ndarray, str]:
    group = rng.choice(sorted(speech["group"].unique()))
    rows = speech[speech["group"] == group].sort_values("id")
    k = int(rng.integers(len(rows)))
    parts, total = [], 0.0
    while total < target_s:
        row = rows.iloc[k % len(rows)]
        parts.append(_fade(_read(row, root)))
        total += parts[-1].size / SAMPLE_RATE
        k += 1
    return np.concatenate(parts), str(group)


def nonspeech_run(nonspeech: pd.DataFrame, root: Path, rng: np.random.Generator,
                  target_s: float) -> tuple[np.ndarray, str, str]:
    kind = rng.choice(["music", "effects", "floor"], p=[0.5, 0.3, 0.2])
    n = int(round(target_s * SAMPLE_RATE))
    music = nonspeech[nonspeech["length_s"] >= MUSIC_MIN_S]
    effects = nonspeech[(nonspeech["length_s"] < MUSIC_MIN_S) & (nonspeech["length_s"] >= 0.1)]
    if kind == "music" and len(music):
        row = music.iloc[int(rng.integers(len(music)))]
        start = row["seg_start_s"] + rng.uniform(0, max(row["length_s"] - target_s, 0))
        return _fade(_read(row, root, start, target_s)), "music", str(row["group"])
    if kind in ("music", "effects") and len(effects):
        parts, total, used = [], 0, []
        while total < n:
            row = effects.iloc[int(rng.integers(len(effects)))]
            gap = np.zeros(int(rng.uniform(0.05, 0.4) * SAMPLE_RATE), dtype=np.float32)
            parts += [_fade(_read(row, root)), gap]
            total += parts[-2].size + gap.size
            used.append(str(row["group"]))
        x = np.concatenate(parts)[:n]
        return _fade(x), "effects", ",".join(sorted(set(used)))
    from qvad.data.signal import colored_noise

    return colored_noise("pink", n, rng), "floor", "synthetic pink"


def build(root: Path, seconds: float, seed: int, split: str = "test") -> tuple[np.ndarray, list[tuple[float, float]], list[dict]]:
    """The clean recording, its speech runs ``[(start_s, end_s)]`` and a log of every run."""
    speech, nonspeech, _ = split_sources(root, split)
    rng = np.random.default_rng(seed)
    parts, truth, log, t = [], [], [], 0
    is_speech = bool(rng.integers(2))
    while t < seconds * SAMPLE_RATE:
        if is_speech:
            x, group = speech_run(speech, root, rng, rng.uniform(*SPEECH_RUN_S))
            x = _at_level(x, LEVEL_DBFS + rng.uniform(-LEVEL_SPREAD_DB, LEVEL_SPREAD_DB))
            truth.append((t / SAMPLE_RATE, (t + x.size) / SAMPLE_RATE))
            log.append({"kind": "speech", "group": group})
        else:
            x, kind, group = nonspeech_run(nonspeech, root, rng, rng.uniform(*NONSPEECH_RUN_S))
            level = FLOOR_DBFS if kind == "floor" else LEVEL_DBFS + rng.uniform(-LEVEL_SPREAD_DB, LEVEL_SPREAD_DB)
            x = _at_level(x, level)
            log.append({"kind": kind, "group": group})
        log[-1].update(start_s=round(t / SAMPLE_RATE, 3), end_s=round((t + x.size) / SAMPLE_RATE, 3))
        parts.append(x)
        t += x.size
        is_speech = not is_speech
    audio = np.concatenate(parts).astype(np.float32)
    peak = float(np.abs(audio).max())
    if peak > 0.99:  # keep every run's relative level, avoid clipping
        audio *= 0.99 / peak
    return audio, truth, log


def noise_bed(root: Path, n: int, seed: int, split: str = "test") -> np.ndarray:
    """The split's noise pool strung together (random order, looped) to ``n`` samples; pink if empty."""
    _, _, noise = split_sources(root, split)
    rng = np.random.default_rng(seed + 1)
    if noise.empty:
        from qvad.data.signal import colored_noise

        return colored_noise("pink", n, rng)
    parts, total = [], 0
    while total < n:
        row = noise.iloc[int(rng.integers(len(noise)))]
        x = _read(row, root)
        if x.size and np.abs(x).max() > 0:
            parts.append(_fade(_at_level(x, -20.0)))
            total += x.size
    return np.concatenate(parts)[:n].astype(np.float32)


def with_noise(clean: np.ndarray, truth: list[tuple[float, float]], bed: np.ndarray, snr_db: float) -> np.ndarray:
    mask = np.zeros(clean.size, dtype=bool)
    for s, e in truth:
        mask[int(s * SAMPLE_RATE):int(e * SAMPLE_RATE)] = True
    p_speech = float(np.mean(np.square(clean[mask], dtype=np.float64)))
    p_noise = float(np.mean(np.square(bed, dtype=np.float64)))
    y = clean + bed * np.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))
    peak = float(np.abs(y).max())
    return (y * (0.99 / peak) if peak > 0.99 else y).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# the systems

def model_segments(paths: list[Path], model_dir: str, device: str | None, batch_size: int | None,
                   threads: int, workdir: Path, extra: Sequence[str] = ()) -> tuple[dict[str, list], float, dict]:
    """`qvad predict --segments` on the files, through the CLI's own entry point."""
    from qvad.cli import main

    out = workdir / "model.jsonl"
    argv = ["predict", *map(str, paths), "--model-dir", model_dir, "--segments", "--out", str(out),
            "--threads", str(threads), "--no-progress", *extra]
    if device:
        argv += ["--device", device]
    if batch_size:
        argv += ["--batch-size", str(batch_size)]
    start = time.perf_counter()
    code = main(argv)
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    if code != 0:
        raise SystemExit(f"qvad predict failed: {[r['error'] for r in rows if r['error']]}")
    options = [a for a in argv[len(paths) + 1:] if a not in ("--out", str(out), "--no-progress")]
    return {Path(r["path"]).name: [tuple(s[:2]) for s in r["segments"]] for r in rows}, wall, {"argv": options}


def silero_segments(audio: np.ndarray) -> list[tuple[float, float]]:
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    model = load_silero_vad(onnx=False)
    stamps = get_speech_timestamps(torch.from_numpy(audio), model, sampling_rate=SAMPLE_RATE)
    return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]


def ten_vad_segments(audio: np.ndarray) -> list[tuple[float, float]]:
    from qvad.audio.ten_vad import ten_vad_probs
    from qvad.segments import speech_segments

    p = ten_vad_probs(audio, hop_size=256)
    if p.size % 2:
        p = np.append(p, p[-1])
    frames = p.reshape(-1, 2).mean(axis=1)  # two 16 ms hops = one 32 ms Silero frame
    return [(s, e) for s, e, _ in speech_segments(frames, audio.size, 0.5)]


COLLARS_S = (0.0, 0.25)
DETECTION_KEYS = tuple(f"{name}@{c:g}s" for c in COLLARS_S
                       for name in ("detection_error_rate", "detection_precision", "detection_recall"))


def detection_scores(truth: list[tuple[float, float]], hyp: list[tuple[float, float]], duration_s: float) -> dict:
    """pyannote.metrics' DetectionErrorRate and DetectionPrecisionRecallFMeasure at each collar.

    The evaluated region (uem) is the whole recording, so a false alarm in a non-speech run
    counts wherever it falls. Keys name the collar, e.g. ``detection_error_rate@0.25s``.
    """
    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.metrics.detection import DetectionErrorRate, DetectionPrecisionRecallFMeasure

    def annotation(segments: list[tuple[float, float]]) -> Annotation:
        out = Annotation(uri="long_audio")
        for start, end in segments:
            out[Segment(start, end)] = "speech"
        return out

    ref, hyp_ann, uem = annotation(truth), annotation(hyp), Timeline([Segment(0.0, duration_s)])
    out = {}
    for collar in COLLARS_S:
        der = DetectionErrorRate(collar=collar)(ref, hyp_ann, uem=uem, detailed=True)
        prf = DetectionPrecisionRecallFMeasure(collar=collar)
        precision, recall, _ = prf.compute_metrics(prf(ref, hyp_ann, uem=uem, detailed=True))
        out.update({f"detection_error_rate@{collar:g}s": round(float(der["detection error rate"]), 4),
                    f"detection_precision@{collar:g}s": round(float(precision), 4),
                    f"detection_recall@{collar:g}s": round(float(recall), 4),
                    f"miss_s@{collar:g}s": round(float(der["miss"]), 3),
                    f"false_alarm_s@{collar:g}s": round(float(der["false alarm"]), 3)})
    return out


def score(truth: list[tuple[float, float]], hyp: list[tuple[float, float]], duration_s: float) -> dict:
    from qvad.segments import boundary_errors, frame_scores, to_frames

    frames = frame_scores(to_frames(truth, duration_s), to_frames(hyp, duration_s))
    bounds = boundary_errors(truth, hyp)
    out = detection_scores(truth, hyp, duration_s)
    out.update({k: round(v, 4) for k, v in frames.items()})
    out.update({f"boundary_{k}": (round(v, 4) if isinstance(v, float) else v) for k, v in bounds.items()})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results/long_audio.json")
    ap.add_argument("--model-dir", default="models")
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--snrs", type=float, nargs="*", default=[20.0, 10.0, 0.0], help="noisy versions (dB)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep-audio", default=None, help="also write the WAVs and reference RTTM to this folder")
    ap.add_argument("--no-ten-vad", action="store_true")
    ap.add_argument("--split", default="test", choices=["test", "dev"],
                    help="sources of this split only (dev: for choosing options without touching test)")
    ap.add_argument("--predict-args", default="", help="extra `qvad predict` options, e.g. '--hop-ms 250 --pool min'")
    args = ap.parse_args(argv)

    from qvad.common.cpu_numerics import pin_cpu_numerics

    pin_cpu_numerics(args.threads)
    import torch

    clean, truth, log = build(ROOT, args.minutes * 60, args.seed, args.split)
    bed = noise_bed(ROOT, clean.size, args.seed, args.split)
    versions = {"clean": clean, **{f"snr_{snr:+g}dB": with_noise(clean, truth, bed, snr) for snr in args.snrs}}
    duration = clean.size / SAMPLE_RATE

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep_audio) if args.keep_audio else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, x in versions.items():
            paths.append(work / f"long_audio_{name}.wav")
            sf.write(paths[-1], x, SAMPLE_RATE, subtype="FLOAT")
        if args.keep_audio:
            from qvad.segments import rttm_lines

            (work / "reference.rttm").write_text(
                "".join(line + "\n" for line in rttm_lines("long_audio", [(s, e, 1.0) for s, e in truth])))
        model_hyp, model_wall, model_run = model_segments(paths, args.model_dir, args.device, args.batch_size,
                                                          args.threads, work, args.predict_args.split())

    systems: dict[str, dict] = {"model": {}, "silero": {}}
    use_ten = not args.no_ten_vad
    if use_ten:
        try:
            ten_vad_segments(np.zeros(SAMPLE_RATE, dtype=np.float32))
            systems["ten_vad"] = {}
        except Exception as exc:  # not installed or its C++ runtime missing
            print(f"ten_vad skipped: {exc}", file=sys.stderr)
            use_ten = False
    walls = {"model": model_wall, "silero": 0.0, "ten_vad": 0.0}
    for name, x in versions.items():
        systems["model"][name] = score(truth, model_hyp[f"long_audio_{name}.wav"], duration)
        start = time.perf_counter()
        systems["silero"][name] = score(truth, silero_segments(x), duration)
        walls["silero"] += time.perf_counter() - start
        if use_ten:
            start = time.perf_counter()
            systems["ten_vad"][name] = score(truth, ten_vad_segments(x), duration)
            walls["ten_vad"] += time.perf_counter() - start
    for name, per in systems.items():
        per["mean_over_versions"] = {k: round(float(np.mean([v[k] for v in per.values() if v.get(k) is not None])), 4)
                                     for k in (*DETECTION_KEYS, "f1", "precision", "recall", "boundary_mean_s")
                                     if any(v.get(k) is not None for v in per.values())}

    cfg = json.loads((Path(args.model_dir) / "detector.json").read_text())
    kinds = pd.Series([r["kind"] for r in log]).value_counts().to_dict()
    result = {
        "what": f"pyannote.metrics detection error rate / precision / recall (collars {list(COLLARS_S)} s, "
                f"pyannote's total width around each reference boundary), frame-level (10 ms) speech F1 and "
                f"boundary error on long audio built from {args.split.upper()}-split sources only",
        "audio": {"duration_s": round(duration, 3), "speech_share": round(sum(e - s for s, e in truth) / duration, 4),
                  "speech_runs": len(truth), "runs_by_kind": {k: int(v) for k, v in kinds.items()},
                  "speech_groups": sorted({r["group"] for r in log if r["kind"] == "speech"}),
                  "versions": list(versions), "noise": "the test split's noise pool (lincity ambience) looped; "
                  "SNR against the power of the speech runs", "seed": args.seed, "runs": log},
        "systems": systems,
        "settings": {
            "model": {"command": "qvad predict FILE... " + " ".join(model_run["argv"]),
                      "preset": cfg["model"].get("preset"), "detector_json_window_ms": cfg["window_ms"],
                      "detector_json_hop_ms": cfg["hop_ms"], "predict_args": args.predict_args,
                      "threshold": cfg["threshold"], "post_processing": "silero get_speech_timestamps_from_probs "
                      "defaults (min_speech 250 ms, min_silence 100 ms, pad 30 ms, neg_threshold thr-0.15)"},
            "silero": "silero_vad.get_speech_timestamps(audio, load_silero_vad()) with all defaults",
            "ten_vad": "ten_vad_probs (hop 256) paired to 32 ms frames, then the same Silero post-processing at 0.5"
            if use_ten else "not run",
        },
        "wall_s": {k: round(v, 2) for k, v in walls.items() if k in systems},
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads,
                    "device": args.device or ("cuda" if torch.cuda.is_available() else "cpu")},
    }
    from qvad.common.atomic import write_json

    write_json(args.out, result)
    print(f"{'system':8s} {'version':12s} {'DetER':>6s} {'DetP':>6s} {'DetR':>6s} {'DetER.25':>8s} "
          f"{'F1':>6s} {'bound. err s':>12s}")
    for name, per in systems.items():
        for version, m in per.items():
            if version == "mean_over_versions":
                continue
            err = m["boundary_mean_s"]
            print(f"{name:8s} {version:12s} {m['detection_error_rate@0s']:6.3f} {m['detection_precision@0s']:6.3f} "
                  f"{m['detection_recall@0s']:6.3f} {m['detection_error_rate@0.25s']:8.3f} {m['f1']:6.3f} "
                  f"{'-' if err is None else f'{err:.3f}':>12s}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
