"""Shared parts of the GPU benchmark: device helpers, the run context, random-weight models, clips."""

from __future__ import annotations

import contextlib
import gc
import json
import platform
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor

import qvad.model.loading as model_load
from qvad.model.collate import ABCollator
from qvad.model.loading import load_model_and_processor
from qvad.model.presets.qwen2_tokenizer import build_qwen2_audio_tokenizer, find_ranks_file
from qvad.model.presets.tiny import build_feature_extractor, build_tokenizer, tiny_config

PRESET = "qwen2-audio-7b-instruct"
SR = 16_000
GIB = 2**30
TARGETS = {  # the throughput targets (clips/s; GiB), one H200, 7B architecture
    "scorer_1s": 600.0,
    "scorer_2s_container": 450.0,
    "scorer_1s_question_first": 1200.0,
    "lora_bf16_1s": 150.0,
    "qlora_nf4_1s": 100.0,
    "qlora_nf4_peak_gib": 16.0,
}
LANDED_H200 = {  # the landed code's figures (b918135), one H200, tiny-tokenizer prompts (97 tokens)
    "scorer_1s": "471.9 clips/s (batch 512; naive HF+peft 67.1)",
    "scorer_2s_container": "337.1 clips/s (batch 512)",
    "lora_bf16_1s": "103.7 / 111.1 clips/s (batch 64 / 80; naive 19.5)",
    "qlora_nf4_1s": "77.1 clips/s at 14.49 GiB (checkpointing, batch 64; naive 26.8)",
}
NOMINAL_PEAK_TFLOPS = 790.0
"""bf16 dense matmul rate measured on these H200s (769-798 TFLOP/s on random data)."""

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


# --------------------------------------------------------------------------------------------
# device helpers
def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def reset_peak() -> None:
    if CUDA:
        torch.cuda.reset_peak_memory_stats()


def peak() -> dict[str, float]:
    """Peak allocated and reserved GiB since :func:`reset_peak`, and the card's memory outside torch's allocator.

    Reserved memory leaves out what the CUDA context, the cuBLAS / cuDNN handles and the loaded
    kernels take on the card, which a small card must hold as well: ``outside_torch_gib`` is the
    card's used memory (``cudaMemGetInfo``) less what this process's allocator holds now, so a run
    needs about ``peak_reserved_gib + outside_torch_gib`` of the card. It also counts other
    processes on the same GPU: read it from a benchmark that has the card to itself.
    """
    if not CUDA:
        return {}
    free, total = torch.cuda.mem_get_info()
    return {
        "peak_alloc_gib": round(torch.cuda.max_memory_allocated() / GIB, 2),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 2),
        "outside_torch_gib": round((total - free - torch.cuda.memory_reserved()) / GIB, 2),
    }


def cleanup() -> None:
    gc.collect()
    if CUDA:
        torch.cuda.empty_cache()


def allocated_gib() -> float:
    return round(torch.cuda.memory_allocated() / GIB, 2) if CUDA else 0.0


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def failure_row(label: str, batch: int, exc: BaseException) -> dict:
    """Result row of a failed measurement: 'OOM', or the exception (its traceback printed)."""
    if not is_oom(exc):
        traceback.print_exc()
    return {"config": label, "batch": batch, "error": "OOM" if is_oom(exc) else f"{type(exc).__name__}: {exc}"}


def throughput(run: Any, clips: list, batch: int) -> dict:
    """Clips/s of ``run(clips)`` after a one-batch warm-up ``run(clips[:batch])``, with peak memory."""
    run(clips[:batch])  # warm-up
    sync()
    reset_peak()
    start = time.perf_counter()
    run(clips)
    sync()
    seconds = time.perf_counter() - start
    return {"batch": batch, "clips": len(clips), "seconds": round(seconds, 3),
            "clips_per_s": round(len(clips) / seconds, 1), **peak()}


def best(rows: list, config: str, cap_gib: float | None = None) -> dict | None:
    ok = [r for r in rows if r.get("config") == config and "clips_per_s" in r
          and (cap_gib is None or r.get("peak_alloc_gib", 0) <= cap_gib)]
    return max(ok, key=lambda r: r["clips_per_s"]) if ok else None


class Clock:
    """Wall-clock budget: optional measurements are skipped when they would not fit."""

    def __init__(self, budget_s: float) -> None:
        self.start = time.perf_counter()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def have(self, seconds: float) -> bool:
        return self.elapsed() + seconds < self.budget_s


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# the run context every section takes
@dataclass
class Bench:
    """The report being written (saved after each step), the budget, params.yaml's parts, the mode."""

    report: dict[str, Any]
    out_file: Path
    clock: Clock
    workdir: Path
    prompt_cfg: dict
    lora_cfg: dict
    trunc_multiple: int
    tiny: bool
    skip: set[str] = field(default_factory=set)
    processor: Any = None
    model_config: Any = None
    peak_tflops: float = NOMINAL_PEAK_TFLOPS
    shapes: dict = field(default_factory=dict)

    def clip_shape(self, clips_fn: Any, prompt_cfg: dict):
        """Prompt shape (benchmarks.gpu.flops.ClipShape) of the clips ``clips_fn`` makes, in this layout."""
        key = (clips_fn.__name__, (prompt_cfg or {}).get("audio_position") or "before_question")
        if key not in self.shapes:
            self.shapes[key] = clip_shape(self.processor, clips_fn(1, 0)[0], prompt_cfg, self.trunc_multiple)
        return self.shapes[key]

    def with_flops(self, row: dict, kind: str, clips_fn: Any, prompt_cfg: dict) -> dict:
        """``row`` with its FLOPs per clip, compute limit and MFU (``kind``: 'scorer' or 'train')."""
        from .flops import annotate, scorer_flops, train_flops

        if self.processor is None or self.model_config is None:
            return row
        shape = self.clip_shape(clips_fn, prompt_cfg)
        flops = (scorer_flops(self.model_config, shape) if kind == "scorer"
                 else train_flops(self.model_config, shape, self.lora_cfg))
        row["layout"] = (prompt_cfg or {}).get("audio_position") or "before_question"
        row["tokens"] = {"prefix": shape.prefix, "own": shape.rest}
        return annotate(row, flops, self.peak_tflops)

    @property
    def small(self) -> bool:
        """Small batches and few steps: the tiny architecture, or no GPU."""
        return self.tiny or not CUDA

    @property
    def preset(self) -> str:
        return "tiny" if self.tiny else PRESET

    @property
    def steps_warm(self) -> tuple[int, int]:
        """Optimizer steps per training measurement, and how many of them are warm-up."""
        return (3, 1) if self.small else (8, 2)

    def save(self) -> None:
        self.report["elapsed_s"] = round(self.clock.elapsed(), 1)
        self.out_file.write_text(json.dumps(self.report, indent=2, default=str) + "\n")

    def add(self, section: str, row: dict, label: str, save: bool = True) -> None:
        """Append ``row`` to ``report[section]``, log it as ``label: row``, save the report."""
        self.report[section].append(row)
        log(f"{label}: {row}")
        if save:
            self.save()


# --------------------------------------------------------------------------------------------
# model, processor
AUDIO_7B = {
    "model_type": "qwen2_audio_encoder",
    "num_mel_bins": 128,
    "d_model": 1280,
    "encoder_layers": 32,
    "encoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "max_source_positions": 1500,
}
TEXT_7B = {
    "model_type": "qwen2",
    "vocab_size": 156032,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
}


def make_processor(tiny: bool) -> tuple[Qwen2AudioProcessor, str]:
    """The processor and which tokenizer it holds: Qwen2-Audio's real one (rebuilt from
    qwen.tiktoken, qvad.model.presets.qwen2_tokenizer) for the 7B when its ranks are found, else
    the offline tiny one."""
    if not tiny and find_ranks_file() is not None:
        tokenizer, name = build_qwen2_audio_tokenizer(), f"qwen2-audio (from {find_ranks_file()})"
    else:
        tokenizer, name = build_tokenizer(), "tiny offline BPE (qvad.model.presets.tiny)"
    processor = Qwen2AudioProcessor(feature_extractor=build_feature_extractor(), tokenizer=tokenizer)
    tokenizer.chat_template = processor.chat_template
    return processor, name


def measure_matmul_tflops(n: int = 8192, reps: int = 10) -> float | None:
    """bf16 dense matmul rate of this GPU on random data (mean of ``reps`` after 3 warm-ups)."""
    if not CUDA:
        return None
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        a @ b
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000 / reps
    del a, b
    cleanup()
    return round(2 * n**3 / seconds / 1e12, 1)


def make_config(processor: Qwen2AudioProcessor, tiny: bool) -> Qwen2AudioConfig:
    """The 7B shapes; special ids from the processor's tokenizer (the real ids with the real one)."""
    tok = processor.tokenizer
    if tiny:
        return tiny_config(tok)
    ids = tok.convert_tokens_to_ids
    special = {
        "bos_token_id": ids("<|endoftext|>"),
        "eos_token_id": ids("<|im_end|>"),
        "pad_token_id": ids("<|endoftext|>"),
    }
    return Qwen2AudioConfig(audio_config=dict(AUDIO_7B), text_config={**TEXT_7B, **special},
                            audio_token_index=processor.audio_token_id)


def random_state_dict(config: Qwen2AudioConfig) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Random bf16 weights built directly on the GPU (HF init), kept on the host for the loaders."""
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = Qwen2AudioForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    counts = {
        "total": sum(p.numel() for p in model.parameters()),
        "audio_tower": sum(p.numel() for p in model.model.audio_tower.parameters()),
        "language_model": sum(p.numel() for p in model.model.language_model.parameters()),
        "lm_head": model.lm_head.weight.numel(),
    }
    state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    del model
    cleanup()
    return state, counts


@contextlib.contextmanager
def weights_from_memory(state_dict: dict[str, torch.Tensor]):
    """Let qvad.model.loading's from_pretrained take the weights from ``state_dict`` (config from the dir)."""
    real = model_load.Qwen2AudioForConditionalGeneration

    class FromMemory(real):  # type: ignore[misc, valid-type]
        @classmethod
        def from_pretrained(cls, path, **kwargs):  # noqa: ANN001, ANN206
            kwargs.pop("use_safetensors", None)
            config = Qwen2AudioConfig.from_pretrained(path)
            return real.from_pretrained(None, config=config, state_dict=dict(state_dict), **kwargs)

    model_load.Qwen2AudioForConditionalGeneration = FromMemory
    try:
        yield
    finally:
        model_load.Qwen2AudioForConditionalGeneration = real


class Loader:
    """Loads through qvad.model.loading.load_model_and_processor from memory, else from a /tmp checkpoint."""

    def __init__(self, config: Qwen2AudioConfig, processor: Qwen2AudioProcessor, state: dict, workdir: Path,
                 tiny: bool) -> None:
        self.dir = workdir / "base"
        self.dir.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(self.dir)
        processor.save_pretrained(self.dir)
        self.state = state
        self.route = "memory"
        self.notes: list[str] = []
        self.tiny = tiny

    def load(self, quantization: str, for_training: bool, **extra: Any):
        cfg = {"preset": "tiny" if self.tiny else PRESET, "path": str(self.dir), "quantization": quantization, **extra}
        start = time.perf_counter()
        if self.route == "memory":
            try:
                with weights_from_memory(self.state):
                    out = load_model_and_processor(cfg, DEVICE, for_training=for_training)
                self.notes.append(f"{quantization}: in-memory load {time.perf_counter() - start:.1f} s")
                return out
            except Exception as exc:  # noqa: BLE001
                self.notes.append(f"{quantization}: in-memory load failed ({type(exc).__name__}: {exc}); "
                                  "falling back to a safetensors checkpoint in /tmp")
                log(self.notes[-1])
                traceback.print_exc()
                cleanup()
                self._write_checkpoint()
        start = time.perf_counter()
        out = load_model_and_processor(cfg, DEVICE, for_training=for_training)
        self.notes.append(f"{quantization}: checkpoint load {time.perf_counter() - start:.1f} s")
        return out

    def _write_checkpoint(self) -> None:
        from safetensors.torch import save_file

        start = time.perf_counter()
        save_file({k: v.contiguous() for k, v in self.state.items()}, str(self.dir / "model.safetensors"),
                  metadata={"format": "pt"})
        self.route = "checkpoint"
        self.notes.append(f"wrote {self.dir / 'model.safetensors'} in {time.perf_counter() - start:.1f} s")


# --------------------------------------------------------------------------------------------
# synthetic clips
def one_second_clips(n: int, seed: int) -> list[np.ndarray]:
    """1 s clips: white noise and chirp-like tones, alternating."""
    rng = np.random.default_rng(seed)
    t = np.arange(SR) / SR
    clips = []
    for i in range(n):
        if i % 2:
            clips.append((0.5 * np.sin(2 * np.pi * (200 + 300 * rng.random()) * t * (1 + t))).astype(np.float32))
        else:
            clips.append((0.1 * rng.standard_normal(SR)).astype(np.float32))
    return clips


def container_clips(n: int, seed: int, container_s: float = 2.0) -> list[np.ndarray]:
    """2 s containers of low-level noise with a 0.2-1 s clip centred in each (the mix stage's layout)."""
    rng = np.random.default_rng(seed)
    out = []
    for clip in one_second_clips(n, seed + 1):
        box = (1e-3 * rng.standard_normal(int(container_s * SR))).astype(np.float32)
        length = int(rng.uniform(0.2, 1.0) * SR)
        start = (len(box) - length) // 2
        box[start : start + length] += clip[:length]
        out.append(box)
    return out


def tokens_per_clip(processor: Any, clip: np.ndarray, prompt_cfg: Any) -> int:
    return int(ABCollator(processor, prompt_cfg).prompt_batch([clip])["input_ids"].shape[1])


def clip_shape(processor: Any, clip: np.ndarray, prompt_cfg: Any, trunc_multiple: int):
    """Prefix / own tokens, encoder positions and audio tokens of ``clip``'s prompt (benchmarks.gpu.flops)."""
    from qvad.model.encoder_truncation import truncated_frames
    from qvad.model.accel.shared_prefix import prefix_tokens

    from .flops import ClipShape

    col = ABCollator(processor, prompt_cfg)
    batch = col.host_prompt_batch([clip])
    ids, mask = batch["input_ids"][0], batch["attention_mask"][0]
    prefix = len(prefix_tokens(ids, mask, col.audio_token_id))
    frames = truncated_frames(batch["feature_attention_mask"], trunc_multiple, 3000)
    audio = int((ids == col.audio_token_id).sum())
    return ClipShape(prefix=prefix, rest=int(mask.sum()) - prefix, encoder_positions=frames // 2, audio_tokens=audio)


# --------------------------------------------------------------------------------------------
def _package_versions() -> dict[str, str]:
    info = {}
    for name in ("peft", "accelerate", "bitsandbytes", "tokenizers", "safetensors", "huggingface_hub"):
        try:
            info[name] = __import__(name).__version__
        except Exception as exc:  # noqa: BLE001
            info[name] = f"unavailable ({type(exc).__name__})"
    return info


def environment() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name(0) if CUDA else "cpu",
        **_package_versions(),
    }
    if CUDA:
        props = torch.cuda.get_device_properties(0)
        info["gpu_memory_gib"] = round(props.total_memory / GIB, 1)
        info["sm_count"] = props.multi_processor_count
    return info
