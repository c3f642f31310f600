"""The pipeline's own stages from train on, run on a GPU (or the CPU, as a dry run), and checked.

    python -m benchmarks.gpu_pipeline.check --out OUT --data DATA [--device cuda] [--configs ...]

(``benchmarks/gpu_pipeline/run.sh`` wraps it.) For each configuration it makes a work folder with
``params.yaml`` (the repository's, with the configuration's ``model.*`` values and the subset's
sizes) and ``data/`` (the subset ``scripts/gather_gpu_carry.sh`` packed), then runs train,
optimize_prompt, evaluate and psychometric as ``python -m stages.NAME`` would, in that order, one
process each (:mod:`benchmarks.gpu_pipeline.stage` records wall time, peak GPU memory and the
fast-path counters). Then it checks:

1. every stage exits 0;
2. each metrics file has every key the CPU run's metrics file in the repository has (``metrics/``);
3. the adapter reloads as evaluate loads it (:mod:`benchmarks.gpu_pipeline.reload`);
4. ``qvad predict --device DEV --batch-size B`` on the test clips, B being ``evaluate.batch_size``,
   gives evaluate's calibrated probabilities (``data/eval/predictions.csv``) within
   :data:`TOLERANCE`; predict at its default batch size is compared too and reported beside it
   (``predict_default_batch``), not checked: see :data:`TOLERANCE`;
5. the fast paths ran in evaluate and the frozen-encoder cache in train (:data:`EXPECTED`).

Everything lands in ``OUT/pipeline_check.json`` (saved after every stage) and a Markdown table in
``OUT/pipeline_check.md``.
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import yaml

from qvad.common.atomic import write_text
from qvad.common.params import get, load_params

REPO = Path(__file__).resolve().parents[2]
STAGES = ("train", "optimize_prompt", "evaluate", "psychometric")
METRICS = {"train": "train.json", "optimize_prompt": "opro.json", "evaluate": "eval.json",
           "psychometric": "psychometric.json"}
EXTRA_METRICS = {"evaluate": "categories.json"}
DATA_DEPENDENT_TOP = {"categories.json"}
"""Files whose top-level keys name data (source categories): compared one level down."""

TOLERANCE = {"cpu": 1e-3, "cuda": 0.02}
"""Largest |P(speech) from qvad predict - p_speech_calibrated from evaluate| accepted per clip.

Predict runs at ``evaluate.batch_size`` on the test clips in evaluate's order, so both score the
same samples (normalisation is idempotent: :data:`qvad.data.level.UNITY`) in batches of the same
shapes, and the same kernels compute each clip. At predict's default batch size (64 on a GPU)
cuBLAS picks kernels by shape and a clip's answer-logit difference moves by bfloat16 rounding; the
calibrated P moves by that divided by the temperature, which for a collapsed random 4 + 4 model
fits as low as 0.16. That comparison is reported (``predict_default_batch``), not checked: it
measures cuBLAS's shape choices, not the pipeline's code."""

EXPECTED = {
    # stage: {counter (qvad.model.accel.counters, plus encoder_truncations): devices where it must be > 0}
    "train": {"encoder_cache_hits": ("cpu", "cuda")},
    "evaluate": {"prefix_reads": ("cpu", "cuda"), "answer_slot_layers": ("cpu", "cuda"),
                 "encoder_truncations": ("cpu", "cuda"), "one_pass_calls": ("cuda",),
                 "fused_rotary_kernel": ("cuda",), "silu_mul_kernel": ("cuda",),
                 "residual_gemm_adds": ("cuda",)},
}
NOT_EXPECTED = {
    ("train", "encoder_cache_hits", "tiny"): "the tiny preset trains its whole audio tower: nothing to cache",
    ("evaluate", "residual_gemm_adds", "nf4"):
        "by design: the fused residual add needs plain bf16 nn.Linear projections; NF4's down_proj is "
        "Linear4bit and o_proj carries LoRA",
}


# --------------------------------------------------------------------------------------------
# configurations
def configurations(device: str, widths: str, depth: tuple[int, int], ckpt_root: Path) -> dict[str, dict]:
    """Name -> ``model.*`` overrides and the checkpoint to build (None: the pipeline builds its own)."""
    audio_layers, text_layers = depth
    qwen = {"kind": "qwen", "dir": ckpt_root / f"qwen2_audio_{widths}_{audio_layers}x{text_layers}",
            "widths": widths, "depth": depth}
    whisper = {"kind": "whisper-tiny", "dir": ckpt_root / "whisper_tiny_random_encoder"}
    gpu = {"preset": "qwen2-audio-7b-instruct", "dtype": "bfloat16"}
    if device == "cpu":
        return {
            # the tiny preset trains its whole audio tower, so it takes no encoder LoRA
            "tiny-cpu": {"model": {"preset": "tiny", "quantization": "none", "dtype": "float32"}, "checkpoint": None,
                         "params": {"lora.audio_layers": 0}},
            "qwen-cpu": {"model": {"preset": "qwen2-audio-7b-instruct", "quantization": "none", "dtype": "float32"},
                         "checkpoint": qwen},
            "whisper-tiny-cpu": {"model": {"preset": "whisper-tiny", "quantization": "none", "dtype": "float32"},
                                 "checkpoint": whisper},
        }
    return {
        "qwen-nf4": {"model": {**gpu, "quantization": "nf4"}, "checkpoint": qwen},
        "qwen-bf16": {"model": {**gpu, "quantization": "bf16"}, "checkpoint": qwen},
        "whisper-tiny-bf16": {"model": {"preset": "whisper-tiny", "quantization": "bf16", "dtype": "bfloat16"},
                              "checkpoint": whisper},
    }


def build_checkpoint(spec: dict | None, device: str) -> str | None:
    """Build (or reuse) the configuration's checkpoint; its folder, or None."""
    from benchmarks.gpu_pipeline.checkpoint import build_qwen2_audio, build_whisper_tiny

    if spec is None:
        return None
    if spec["kind"] == "qwen":
        return str(build_qwen2_audio(spec["dir"], spec["widths"], *spec["depth"], device))
    return str(build_whisper_tiny(spec["dir"]))


# --------------------------------------------------------------------------------------------
# the work folder
def set_key(params: dict, dotted: str, value: Any) -> None:
    node = params
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    if last not in node:
        raise KeyError(f"params.yaml has no key {dotted!r}")
    node[last] = value


def make_workdir(work: Path, data: list[Path], overrides: dict[str, Any]) -> Path:
    """A fresh folder with params.yaml (repository's + ``overrides``) and the subsets' data linked in.

    Each file of ``data/`` in the subset folders is linked by its relative path, later folders
    replacing earlier ones' files of the same name: a second subset that holds only the whole test
    split (``subset.py --splits test``) thus swaps in its ``test.csv`` and adds its clips, so a
    carry too small for everything at once can bring the data in two parts.
    """
    if work.exists():
        shutil.rmtree(work)
    for sub in ("metrics", "models", "plots", "reports", "data"):
        (work / sub).mkdir(parents=True)
    for folder in data:
        root = (folder / "data").resolve()
        for path in sorted(root.rglob("*")):
            if path.is_file():
                link = work / "data" / path.relative_to(root)
                link.parent.mkdir(parents=True, exist_ok=True)
                link.unlink(missing_ok=True)
                link.symlink_to(path)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in overrides.items():
        set_key(params, key, value)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return work


def run_stage(work: Path, stage: str, args: list[str], timeout: float, log: Path, name: str | None = None) -> dict:
    """One stage in its own process (benchmarks.gpu_pipeline.stage); its result row, logged and saved
    under ``name`` (default ``stage``: one stage run twice needs two names)."""
    name = name or stage
    result = work / f"stage_{name}.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "benchmarks.gpu_pipeline.stage", stage, str(result), *args]
    start = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"\n===== {work.name}: {name} =====\n")
        out.flush()
        try:
            code = subprocess.run(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=max(timeout, 1)).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    row = json.loads(result.read_text()) if result.exists() else {"stage": name}
    row["exit_code"] = code
    # wall_s is timed inside the stage; process_wall_s adds the interpreter's start and imports
    row["process_wall_s"] = round(time.perf_counter() - start, 2)
    row.setdefault("wall_s", row["process_wall_s"])
    return row


# --------------------------------------------------------------------------------------------
# checks
def key_paths(obj: Any, prefix: str = "") -> set[str]:
    """Dotted paths of every dict key (lists and scalars are leaves); the values a metric is broken
    down by (``by.<facet>.<value>``: sample rates, SNRs... present in the data) become ``*``."""
    paths = set()
    if isinstance(obj, dict):
        for key, value in obj.items():
            if prefix.endswith(".by") or prefix == "by":
                path = f"{prefix}.{key}"
            elif prefix.rsplit(".", 2)[-2:-1] == ["by"]:
                path = f"{prefix}.*"
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            paths.add(path)
            paths |= key_paths(value, path)
    return paths


def missing_keys(reference: dict, produced: dict, data_dependent_top: bool) -> list[str]:
    """Key paths of ``reference`` that ``produced`` lacks (top level pooled when it names data)."""
    if data_dependent_top:
        pool = lambda d: {p for v in d.values() for p in key_paths(v)}  # noqa: E731
        return sorted(pool(reference) - pool(produced))
    return sorted(key_paths(reference) - key_paths(produced))


def drop_unfitted(reference: dict, produced: dict) -> dict:
    """``reference`` without the GLMM fits that ``produced`` could not make: a small subset can leave
    a system's class with no errors at all, and the fit then reports its status, not coefficients."""
    fits = produced.get("glmm", {}).get("systems", {})
    ref_fits = reference.get("glmm", {}).get("systems", {})
    if not fits or not ref_fits:
        return reference
    trimmed = json.loads(json.dumps(reference))
    for system, classes in fits.items():
        for label, fit in classes.items():
            if fit.get("status") != "fitted" and label in trimmed["glmm"]["systems"].get(system, {}):
                trimmed["glmm"]["systems"][system][label] = dict(fit)
    return trimmed


def check_metrics(work: Path, stage: str) -> dict:
    out = {}
    for name in filter(None, (METRICS.get(stage), EXTRA_METRICS.get(stage))):
        produced = work / "metrics" / name
        if not produced.exists():
            out[name] = {"ok": False, "problem": "not written"}
            continue
        reference, ours = json.loads((REPO / "metrics" / name).read_text()), json.loads(produced.read_text())
        missing = missing_keys(drop_unfitted(reference, ours), ours, name in DATA_DEPENDENT_TOP)
        out[name] = {"ok": not missing, "missing": missing[:20], "n_missing": len(missing)}
    return out


def check_counters(stage: str, row: dict, device: str, model_cfg: dict) -> dict:
    out = {}
    for name, devices in EXPECTED.get(stage, {}).items():
        value = row.get("counters", {}).get(name)
        why = NOT_EXPECTED.get((stage, name, model_cfg["preset"])) or NOT_EXPECTED.get(
            (stage, name, model_cfg["quantization"]))
        if device not in devices or why:
            out[name] = {"value": value, "required": False, **({"why": why} if why else {})}
        else:
            out[name] = {"value": value, "required": True, "ok": bool(value)}
    return out


WORST_CLIPS = 5
"""Clips with the largest |dP| kept in the result, for a miss to be diagnosed without the work folder."""


def compare_predict(work: Path, device: str, csv: str = "predict.csv") -> dict:
    """``qvad predict``'s P(speech) (``work``/``csv``) against evaluate's calibrated probabilities, per test clip."""
    ours = pd.read_csv(work / csv, keep_default_na=False)
    ours = pd.DataFrame({"clip_id": [Path(p).stem for p in ours["path"]], "p_predict": ours["p_speech"],
                         "error": ours["error"]})
    theirs = pd.read_csv(work / "data/eval/predictions.csv", keep_default_na=False)
    both = theirs.merge(ours, on="clip_id", how="inner")
    p_predict, p_evaluate = both["p_predict"].astype(float), both["p_speech_calibrated"].astype(float)
    diff = (p_predict - p_evaluate).abs()
    tol = TOLERANCE["cpu" if device == "cpu" else "cuda"]
    errors = [e for e in ours["error"] if e]
    detector = json.loads((work / "models" / "detector.json").read_text())
    worst = both.assign(diff=diff).nlargest(WORST_CLIPS, "diff")
    threshold = float(detector["threshold"])
    return {"clips": int(len(both)), "errors": errors[:5], "max_abs_diff": float(diff.max()) if len(diff) else None,
            "mean_abs_diff": float(diff.mean()) if len(diff) else None, "tolerance": tol,
            "decision_flips": int(((p_predict >= threshold) != (p_evaluate >= threshold)).sum()),
            # what a miss needs to be understood: the calibration that scales a logit difference,
            # and the clips behind the largest differences (uncalibrated and calibrated P)
            "temperature": detector.get("temperature"), "threshold": threshold,
            "worst": [{"clip_id": r.clip_id, "p_speech": float(r.p_speech),
                       "p_speech_calibrated": float(r.p_speech_calibrated), "p_predict": float(r.p_predict)}
                      for r in worst.itertuples()],
            "ok": len(both) >= 50 and not errors and float(diff.max()) <= tol}


def extra_timing(work: Path) -> dict:
    timing = work / "logs/train_timing.json"
    return json.loads(timing.read_text()) if timing.exists() else {}


# --------------------------------------------------------------------------------------------
def subset_summary(folders: list[Path]) -> dict:
    """The subsets' ``subset.json`` merged as :func:`make_workdir` merges their files (later wins)."""
    merged: dict = {}
    for folder in folders:
        summary = json.loads((folder / "subset.json").read_text())
        merged = {**merged, **summary, "per_cell": {**merged.get("per_cell", {}), **summary.get("per_cell", {})}}
    return merged


def run_configuration(name: str, cfg: dict, path: str | None, args: argparse.Namespace, entry: dict,
                      publish: Callable[[str, dict], None]) -> None:
    """Stages, then the adapter reload and ``qvad predict``, of one configuration, checked into
    ``entry``; ``publish(name, entry)`` after each step saves a copy (configurations may run in threads)."""
    start = time.perf_counter()
    overrides = {f"model.{k}": v for k, v in cfg["model"].items()}
    overrides["model.path"] = path
    overrides.update(cfg.get("params", {}))
    overrides["psychometric.bases_per_class"] = int(args.subset["psychometric_bases_per_class"])
    if args.device != "cpu":
        # all cores for the CPU parts (VAD baselines, bootstrap fits); shared out under --jobs
        overrides["cpu_threads"] = None if args.jobs == 1 else max(1, (os.cpu_count() or 1) // args.jobs)
    for item in args.set or []:
        key, value = item.split("=", 1)
        overrides[key] = yaml.safe_load(value)
    entry["overrides"] = overrides
    work = make_workdir(args.workdir / name, args.data, overrides)
    log = args.out / f"stages_{name}.log"
    ok = True
    for stage in STAGES:
        if not ok:
            break
        row = run_stage(work, stage, [], args.deadline - time.time(), log)
        entry["stages"][stage] = row
        ok = row["exit_code"] == 0
        entry["checks"][f"{stage}_exit_0"] = ok
        if ok:
            entry["checks"][f"{stage}_metric_keys"] = check_metrics(work, stage)
            if stage in EXPECTED:
                entry["checks"][f"{stage}_counters"] = check_counters(stage, row, args.device, cfg["model"])
        if stage == "train":
            entry["train_timing"] = extra_timing(work)
        publish(name, entry)
    if ok:
        row = run_stage(work, "reload", [str(work / "reload.json")], args.deadline - time.time(), log)
        entry["stages"]["reload"] = row
        entry["checks"]["adapter_reload"] = {
            "ok": row["exit_code"] == 0,
            **(json.loads((work / "reload.json").read_text()) if (work / "reload.json").exists() else {})}
        clips = pd.read_csv(work / "data/splits/test.csv", keep_default_na=False)["path"].tolist()
        batch = get(load_params(work / "params.yaml"), "evaluate.batch_size")

        def predict(name: str, options: list[str]) -> dict:
            """``qvad predict`` on the test clips into ``name``.csv, compared with evaluate."""
            row = run_stage(work, "predict", [*clips, "--device", args.device, "--model-dir", "models",
                                              *options, "--out", f"{name}.csv", "--no-progress"],
                            args.deadline - time.time(), log, name=name)
            entry["stages"][name] = row
            return (compare_predict(work, args.device, f"{name}.csv") if row["exit_code"] == 0
                    else {"ok": False, "exit_code": row["exit_code"]})

        entry["checks"]["predict_matches_evaluate"] = {**predict("predict", ["--batch-size", str(batch)]),
                                                       "batch_size": batch}
        entry["predict_default_batch"] = predict("predict_default_batch", [])
    entry["passed"] = all_passed(entry)
    entry["wall_s"] = round(time.perf_counter() - start, 1)
    publish(name, entry)


def all_passed(entry: dict) -> bool:
    checks = entry["checks"]
    if not all(checks.get(f"{s}_exit_0") for s in STAGES):
        return False
    for key, value in checks.items():
        if key.endswith("_metric_keys") and not all(v["ok"] for v in value.values()):
            return False
        if key.endswith("_counters") and not all(v.get("ok", True) for v in value.values()):
            return False
    return bool(checks.get("adapter_reload", {}).get("ok")) and bool(
        checks.get("predict_matches_evaluate", {}).get("ok"))


def markdown(report: dict) -> str:
    """Per configuration and stage: exit status, wall time, peak GPU memory; then the checks."""
    device = report["environment"].get("device", "cpu")
    lines = [f"Device: {device}. Checkpoint depth {report['depth']} (audio + text layers), widths "
             f"{report['widths']}.", "",
             "| configuration | stage | exit | wall s | with start-up s | peak allocated GiB | peak reserved GiB |",
             "|---|---|---|---|---|---|---|"]
    for name, entry in report["configurations"].items():
        for stage, row in entry["stages"].items():
            lines.append(f"| {name} | {stage} | {row.get('exit_code')} | {row.get('wall_s')} | "
                         f"{row.get('process_wall_s', '-')} | "
                         f"{row.get('peak_allocated_gib', '-')} | {row.get('peak_reserved_gib', '-')} |")
    lines += ["", "| configuration | all checks | train clips/s | predict max abs dP at evaluate's batch (tolerance) "
              "| at predict's default batch (reported) |", "|---|---|---|---|---|"]
    for name, entry in report["configurations"].items():
        pred = entry["checks"].get("predict_matches_evaluate", {})
        default = entry.get("predict_default_batch", {})
        lines.append(f"| {name} | {'pass' if entry.get('passed') else 'FAIL'} | "
                     f"{entry.get('train_timing', {}).get('train_clips_per_second', '-')} | "
                     f"{pred.get('max_abs_diff', '-')} ({pred.get('tolerance', '-')}) | "
                     f"{default.get('max_abs_diff', '-')} |")
    return "\n".join(lines) + "\n"


def environment(device: str) -> dict:
    import torch
    import transformers

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__}
    for name in ("peft", "bitsandbytes", "dvclive"):
        try:  # imported to show it loads; the version from its metadata (dvclive has no __version__)
            importlib.import_module(name)
            info[name] = importlib.metadata.version(name)
        except Exception as exc:  # noqa: BLE001
            info[name] = f"unavailable ({type(exc).__name__})"
    if device != "cpu":
        info["device"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="results folder")
    ap.add_argument("--data", type=Path, action="append",
                    help="the subset gather_gpu_carry.sh packed (default .gpu_data); repeat to add a second "
                         "part, whose files replace the first's (make_workdir)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="configurations run at once (default 1: stage wall times of a machine to oneself)")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--configs", default=None, help="comma-separated names (default: all for the device)")
    ap.add_argument("--widths", default=None, choices=("7b", "tiny"), help="default: 7b on cuda, tiny on cpu")
    ap.add_argument("--depth", default="4+4", help="audio+text layers of the Qwen2-Audio checkpoint (32+32: the 7B)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/qvad_gpu_check"))
    ap.add_argument("--budget-s", type=float, default=3600.0, help="stop starting stages after this many seconds")
    ap.add_argument("--set", action="append", help="extra params override KEY=YAML_VALUE (repeatable)")
    args = ap.parse_args(argv)
    args.widths = args.widths or ("7b" if args.device == "cuda" else "tiny")
    args.depth_pair = tuple(int(x) for x in args.depth.split("+"))
    args.data = args.data or [REPO / ".gpu_data"]
    if args.jobs < 1:
        ap.error(f"--jobs must be at least 1, got {args.jobs}")
    args.deadline = time.time() + args.budget_s
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.subset = subset_summary(args.data)  # read once: every configuration's overrides take from it
    args.out.mkdir(parents=True, exist_ok=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    configs = configurations(args.device, args.widths, args.depth_pair, args.workdir / "checkpoints")
    names = args.configs.split(",") if args.configs else list(configs)
    unknown = [n for n in names if n not in configs]
    if unknown:
        raise SystemExit(f"--configs: unknown {unknown}; for --device {args.device}: {list(configs)}")
    report = {"environment": environment(args.device), "device_arg": args.device, "widths": args.widths,
              "depth": args.depth, "data": args.subset,
              "jobs": args.jobs,
              "tolerance": TOLERANCE, "configurations": {}}

    lock = threading.Lock()

    def publish(name: str, entry: dict) -> None:
        """Copy ``entry`` (owned by the calling thread) into the report and save it."""
        with lock:
            report["configurations"][name] = copy.deepcopy(entry)
            save()

    def save() -> None:
        report["passed"] = all(e.get("passed") for e in report["configurations"].values()) and \
            len(report["configurations"]) == len(names)
        # atomic: a copy taken mid-run sees a whole file
        write_text(args.out / "pipeline_check.json", json.dumps(report, indent=2, default=str) + "\n")
        write_text(args.out / "pipeline_check.md", markdown(report))

    paths, entries = {}, {}
    for name in names:  # one at a time: configurations can share a checkpoint folder
        start = time.perf_counter()
        paths[name] = build_checkpoint(configs[name]["checkpoint"], args.device)
        spec = configs[name]["checkpoint"]
        entries[name] = {
            "model": configs[name]["model"], "stages": {}, "checks": {},
            "checkpoint": {"path": paths[name], "build_s": round(time.perf_counter() - start, 1),
                           **({k: str(v) for k, v in spec.items()} if spec else {})}}
        publish(name, entries[name])

    def one(name: str) -> None:
        if time.time() > args.deadline:
            with lock:
                report.setdefault("skipped", []).append(name)
            return
        run_configuration(name, configs[name], paths[name], args, entries[name], publish)
        print(f"{name}: {'pass' if entries[name]['passed'] else 'FAIL'}", flush=True)

    # --jobs > 1 shares the GPU and the CPU cores between configurations: the checks and peak
    # memory (per process) are unaffected, wall times are not those of a machine to oneself.
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, names))
    save()
    print(markdown(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
