#!/usr/bin/env python3
"""GPU throughput of the project's own scoring and training paths on Qwen2-Audio-7B's architecture.

Random weights, built on the GPU in bf16 with the real model's shapes (../shared/qwen2-audio.md),
with the offline tiny tokenizer/processor of qvad.model.presets.tiny (its <|AUDIO|> id becomes the 7B
config's audio_token_index). The weights reach the model through the project's own loader,
``qvad.model.loading.load_model_and_processor`` (same dtype rules, NF4 settings, k-bit preparation,
feature-cast hook and encoder truncation as the stages), fed from an in-memory state dict
instead of a 16 GB checkpoint (falls back to writing one to /tmp if that route fails).

Measured, each as clips/s and peak GPU memory (torch.cuda.max_memory_allocated):

* inference: ``qvad.model.scoring.score_ab_logits`` (the evaluate stage's scorer) with
  ``feature_device='cuda'``, a batch-size sweep, on 1 s clips and on 2 s containers holding a
  centred 0.2-1 s clip; against the naive path in the same run (processor on the 30 s layout,
  stock 30 s encoder, full-vocabulary logits); plus attributions (``prefix_cache=False``,
  ``device_mel=False``);
* LoRA bf16 training: the train stage's step, i.e. the HF Trainer (bf16 autocast, fused AdamW,
  grad clipping) over ``qvad.model.trainer.AugmentingCollator(ABCollator(..., feature_device='cuda'))``
  batches, LoRA from ``qvad.model.lora.apply_lora`` (params.yaml lora.*), encoder truncation on;
* QLoRA NF4 training: the same through the NF4 loader (quantized from the clean bf16 weights
  before any LoRA is injected).

Usage (repo root, GPU box): ``python3 benchmarks/gpu_throughput.py --out DIR``; ``--tiny`` runs the
same code on the tiny architecture (smoke test; also works on the CPU).

This file parses the arguments and runs the sections in order; the sections live in
``benchmarks/gpu/``: ``common`` (device helpers, run context, random-weight models, clips),
``inference``, ``training``, ``profiling`` (``--profile``) and ``report``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import transformers  # noqa: E402

from benchmarks.gpu.common import (  # noqa: E402
    CUDA,
    Bench,
    Clock,
    Loader,
    allocated_gib,
    cleanup,
    container_clips,
    log,
    make_config,
    make_processor,
    one_second_clips,
    random_state_dict,
    tokens_per_clip,
)
from benchmarks.gpu.inference import inference_section  # noqa: E402
from benchmarks.gpu.profiling import run_profile  # noqa: E402
from benchmarks.gpu.report import new_report, print_table, summarize  # noqa: E402
from benchmarks.gpu.training import lora_bf16_section, qlora_nf4_section  # noqa: E402
from qvad.common.params import load_params  # noqa: E402

SUMMARY_KEYS = ("summary", "inference_checks", "loader_notes", "prompt_tokens", "weights_gib_bf16",
                "weights_gib_nf4", "elapsed_s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--tiny", action="store_true", help="tiny architecture (smoke test)")
    parser.add_argument("--budget-s", type=float, default=540.0, help="skip optional runs past this wall time")
    parser.add_argument("--skip", default="", help="comma list of sections to skip: naive,infer,bf16,nf4,upcast")
    parser.add_argument("--profile", action="store_true",
                        help="instead of the sweeps: kernel breakdown of the scorer and candidate speed-ups")
    parser.add_argument("--profile-batch", type=int, default=512)
    return parser.parse_args(argv)


def start_bench(args: argparse.Namespace) -> Bench:
    """The clock, the output file, params.yaml's parts and the report's opening fields."""
    clock = Clock(args.budget_s)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = (("smoke_tiny" if args.tiny else "gpu_throughput_7b") + ("_profile" if args.profile else "")
            + ("" if CUDA else "_cpu"))
    params = load_params(REPO / "params.yaml")
    lora_cfg = dict(params["lora"])
    trunc_multiple = int(params["model"].get("truncate_multiple", 20))
    return Bench(report=new_report(lora_cfg, trunc_multiple), out_file=out_dir / f"{name}.json", clock=clock,
                 workdir=Path(tempfile.mkdtemp(prefix="qvad_bench_")), prompt_cfg=dict(params.get("prompt") or {}),
                 lora_cfg=lora_cfg, trunc_multiple=trunc_multiple, tiny=args.tiny,
                 skip=set(filter(None, args.skip.split(","))))


def prepare_loader(bench: Bench) -> Loader:
    """Processor, config, prompt lengths, random weights; the loader that feeds them to the project's loader."""
    report = bench.report
    processor = make_processor()
    config = make_config(processor, bench.tiny)
    one_s, box = one_second_clips(1, 0)[0], container_clips(1, 0)[0]
    report["prompt_tokens"] = {"1s": tokens_per_clip(processor, one_s, bench.prompt_cfg),
                               "2s_container": tokens_per_clip(processor, box, bench.prompt_cfg)}
    start = time.perf_counter()
    state, counts = random_state_dict(config)
    report["parameters"] = counts
    report["build_s"] = round(time.perf_counter() - start, 1)
    log(f"built random weights: {counts} in {report['build_s']} s; tokens {report['prompt_tokens']}")
    loader = Loader(config, processor, state, bench.workdir, bench.tiny)
    report["loader_notes"] = loader.notes
    bench.save()
    return loader


def load_bf16(bench: Bench, loader: Loader):
    """The bf16 model for inference (and then LoRA); records attention kinds, weight memory, fused norms."""
    report = bench.report
    model, proc = loader.load("bf16", for_training=False)
    report["attn_implementation"] = {
        "text": model.config.text_config._attn_implementation,
        "audio": model.config.audio_config._attn_implementation,
    }
    report["weights_gib_bf16"] = allocated_gib()
    report["fused_rms_norm_modules"] = sum(
        1 for m in model.modules() if type(m).__name__ == "Qwen2RMSNorm" and "forward" in m.__dict__)
    log(f"bf16 model loaded ({loader.notes[-1]}); {report['weights_gib_bf16']} GiB; "
        f"attn {report['attn_implementation']}")
    bench.save()
    return model, proc


def profile_only(bench: Bench, model, proc, profile_batch: int) -> None:
    run_profile(bench, model, proc, 8 if bench.small else profile_batch)
    bench.report["summary"] = {"profile": True}
    bench.save()
    print(json.dumps(bench.report["profile"], default=str)[:6000])
    log(f"wrote {bench.out_file}")


def finish(bench: Bench) -> None:
    report = bench.report
    report["summary"] = summarize(report)
    if bench.tiny:
        report["summary"]["targets_met"] = "n/a: tiny architecture (smoke test)"
    bench.save()
    print_table(report)
    print(json.dumps({k: report.get(k) for k in SUMMARY_KEYS}, default=str))
    log(f"wrote {bench.out_file}")


def main() -> None:
    args = parse_args()
    transformers.utils.logging.disable_progress_bar()
    bench = start_bench(args)
    log(f"environment: {bench.report['environment']}")
    loader = prepare_loader(bench)
    model, proc = load_bf16(bench, loader)
    if args.profile:
        profile_only(bench, model, proc, args.profile_batch)
        return
    if "infer" not in bench.skip:
        inference_section(bench, model, proc)
    if "bf16" not in bench.skip:
        lora_bf16_section(bench, model, proc)
    del model
    cleanup()
    if "nf4" not in bench.skip:
        qlora_nf4_section(bench, loader)
    finish(bench)


if __name__ == "__main__":
    main()
