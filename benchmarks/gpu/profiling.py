"""``--profile``: where the GPU time goes, per kernel category, for the landed and the current scorer
and for one LoRA train step, plus the host-side collate time and GPU idle share."""

from __future__ import annotations

import time

import torch
from torch.profiler import ProfilerActivity, profile

from qvad.model.answer_loss import answer_loss
from qvad.model.collate import ABCollator
from qvad.model.scoring import score_ab_logits

from . import landed_scoring
from .common import CUDA, DEVICE, Bench, container_clips, log, one_second_clips, sync
from .inference import QFIRST, stock_forwards

ACTIVITIES = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if CUDA else [])
KERNEL_CATEGORIES = (  # first match wins; the rest is "elementwise/reduce/other"
    ("attention", ("fmha", "flash", "attention", "efficient", "sdpa")),
    ("rotary (triton)", ("_rope_kernel",)),
    ("matmul", ("gemm", "nvjet", "xmma", "cutlass", "cublas", "sm90_", "wgmma")),
    ("fft", ("fft",)),
    ("copy/cat/fill", ("copy", "cat", "memcpy", "memset", "fill")),
    ("conv", ("conv", "implicit")),
)


def kernel_category(key: str) -> str:
    k = key.lower()
    for name, words in KERNEL_CATEGORIES:
        if any(w in k for w in words):
            return name
    return "elementwise/reduce/other"


def kernel_breakdown(prof, wall_s: float) -> dict:
    """GPU kernel time by category and the top kernels, from a torch.profiler run."""
    cuda = torch.autograd.DeviceType.CUDA
    rows = [(e.key, e.self_device_time_total, e.count) for e in prof.key_averages()
            if e.device_type == cuda and e.self_device_time_total > 0]
    total = sum(t for _, t, _ in rows)
    cats: dict[str, float] = {}
    for key, t, _ in rows:
        cat = kernel_category(key)
        cats[cat] = cats.get(cat, 0.0) + t
    top = sorted(rows, key=lambda r: -r[1])[:20]
    return {
        "wall_s": round(wall_s, 3),
        "gpu_kernel_s": round(total / 1e6, 3),
        "gpu_busy_fraction": round(total / 1e6 / wall_s, 3) if wall_s else None,
        "by_category_s": {k: round(v / 1e6, 3) for k, v in sorted(cats.items(), key=lambda kv: -kv[1])},
        "top_kernels": [{"kernel": k[:100], "s": round(t / 1e6, 4), "calls": c} for k, t, c in top],
    }


def _profiled(fn, warm) -> dict:
    warm()
    sync()
    with profile(activities=ACTIVITIES) as prof:
        start = time.perf_counter()
        fn()
        sync()
        wall = time.perf_counter() - start
    return kernel_breakdown(prof, wall)


def scorer_profile(model, proc, prompt_cfg, batch: int, n_batches: int, scorer=score_ab_logits,
                   clips_fn=one_second_clips) -> dict:
    clips = clips_fn(batch * n_batches, 5)
    return _profiled(lambda: scorer(model, proc, clips, prompt_cfg, batch, DEVICE),
                     lambda: scorer(model, proc, clips[:batch], prompt_cfg, batch, DEVICE))


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::linear", "aten::matmul", "aten::bmm", "aten::baddbmm")


def op_sources(model, proc, prompt_cfg, batch: int, clips_fn=one_second_clips) -> list[dict]:
    """The scorer's GPU time outside matmuls by aten op and the project or transformers lines that
    called it (one batch): where copies and elementwise kernels come from."""
    clips = clips_fn(batch, 5)

    def run() -> None:
        score_ab_logits(model, proc, clips, prompt_cfg, batch, DEVICE)

    run()
    sync()
    with profile(activities=ACTIVITIES, record_shapes=True, with_stack=True) as prof:
        run()
        sync()
    rows = []
    for e in prof.key_averages(group_by_input_shape=True, group_by_stack_n=12):
        if e.self_device_time_total <= 0 or not e.key.startswith("aten::") or e.key in MATMUL_OPS:
            continue
        frames = [f for f in e.stack if "qvad/" in f or "transformers/" in f]
        rows.append({"op": e.key, "self_gpu_s": round(e.self_device_time_total / 1e6, 5), "calls": e.count,
                     "shapes": str(e.input_shapes)[:160], "where": frames[:3] or list(e.stack[:3])})
    return sorted(rows, key=lambda r: -r["self_gpu_s"])[:40]


def train_step_profile(peft_model, proc, prompt_cfg, batch: int) -> dict:
    """Forward + backward of the train stage's loss (answer_loss under bf16 autocast), no optimizer."""
    col = ABCollator(proc, prompt_cfg, DEVICE)
    col.train_batches_on_device = CUDA
    examples = [{"audio": a, "label": i % 2} for i, a in enumerate(one_second_clips(batch, 11))]
    peft_model.train()

    def step() -> None:
        inputs = {k: v.to(DEVICE) for k, v in col(examples).items()}
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=CUDA):
            loss = answer_loss(peft_model, inputs)
        loss.backward()

    result = _profiled(step, step)
    for p in peft_model.parameters():
        p.grad = None
    peft_model.eval()
    return result


def host_collate_s(proc, prompt_cfg, batch: int) -> float:
    """Seconds per scoring batch of the collator alone (host work and its device copies)."""
    col = ABCollator(proc, prompt_cfg, DEVICE)
    chunk = one_second_clips(batch, 5)
    col.host_prompt_batch(chunk)
    sync()
    start = time.perf_counter()
    for _ in range(3):
        col.host_prompt_batch(chunk)
    sync()
    return round((time.perf_counter() - start) / 3, 4)


def run_profile(bench: Bench, model, proc, batch: int) -> None:
    """Landed scorer vs current scorer (both layouts), host collate time, and one LoRA step."""
    rows = bench.report.setdefault("profile", {})
    small = bench.small
    n = 1 if small else 2
    with stock_forwards(model):
        rows["landed_scorer_1s"] = scorer_profile(model, proc, bench.prompt_cfg, batch, n, landed_scoring.score_ab_logits)
    log(f"profile landed: {rows['landed_scorer_1s']['by_category_s']} busy {rows['landed_scorer_1s']['gpu_busy_fraction']}")
    rows["scorer_1s"] = scorer_profile(model, proc, bench.prompt_cfg, batch, n)
    log(f"profile scorer: {rows['scorer_1s']['by_category_s']} busy {rows['scorer_1s']['gpu_busy_fraction']}")
    rows["scorer_1s_question_first"] = scorer_profile(model, proc, {**bench.prompt_cfg, **QFIRST}, 2 * batch, n)
    rows["scorer_2s_container"] = scorer_profile(model, proc, bench.prompt_cfg, batch, n, clips_fn=container_clips)
    rows["op_sources_2s_container"] = op_sources(model, proc, bench.prompt_cfg, batch, container_clips)
    rows["op_sources_1s_question_first"] = op_sources(model, proc, {**bench.prompt_cfg, **QFIRST}, 2 * batch)
    rows["collate_one_batch_s"] = host_collate_s(proc, bench.prompt_cfg, batch)
    bench.save()


def run_train_profile(bench: Bench, peft_model, proc, batch: int) -> None:
    rows = bench.report.setdefault("profile", {})
    try:
        rows["lora_bf16_train_step_1s"] = train_step_profile(peft_model, proc, bench.prompt_cfg, batch)
        log(f"profile train: {rows['lora_bf16_train_step_1s']['by_category_s']}")
    except Exception as exc:  # noqa: BLE001
        rows["lora_bf16_train_step_1s"] = {"error": f"{type(exc).__name__}: {exc}"}
    bench.save()
