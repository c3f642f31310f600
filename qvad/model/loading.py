"""Load Qwen2-Audio (an offline preset or the real 7B) ready for training or scoring on a device.

Everything model-shaped that a stage does before training or scoring lives here, so training
and evaluation cannot drift apart: same dtype rules, same quantization, same encoder path,
same LoRA scope.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from transformers import AutoProcessor, BitsAndBytesConfig, Qwen2AudioForConditionalGeneration
from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioModel

from qvad.model import accel
from qvad.model.encoder_truncation import truncate_as_configured
from qvad.model.presets import LOCAL_PRESETS, PRESETS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

AUDIO_MODULES = ("model.audio_tower", "model.multi_modal_projector")
"""Top-level names (transformers 5 layout) of the parts that feed audio into the language model."""

def _resolve_dtype(model_cfg: Mapping[str, Any]) -> torch.dtype:
    """Weight dtype for the non-quantized parts: 'bf16'/'nf4' imply bfloat16, else ``dtype`` (float32)."""
    quant = model_cfg.get("quantization", "none")
    name = model_cfg.get("dtype") or ("bfloat16" if quant in ("bf16", "nf4") else "float32")
    if name not in DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {name!r}")
    if quant in ("bf16", "nf4") and name != "bfloat16":
        raise ValueError(f"model.quantization={quant!r} needs model.dtype bfloat16 (or null), got {name!r}")
    return DTYPES[name]


def _quantization_config(quant: str) -> BitsAndBytesConfig | None:
    """NF4 for the language model only; the audio path and lm_head stay in bf16.

    The audio tower and projector are small and precision-sensitive, and scoring reads two
    rows of lm_head directly, so none of them may become 4-bit. Listing skips explicitly drops
    transformers' default skip of lm_head, hence it is named too.
    """
    if quant in ("none", "bf16"):
        return None
    if quant != "nf4":
        raise ValueError(f"model.quantization must be 'none', 'bf16' or 'nf4', got {quant!r}")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=[*AUDIO_MODULES, "lm_head"],
    )


def _prepare_kbit_training(model: Qwen2AudioForConditionalGeneration, checkpointing: bool,
                           fp32_upcast: bool) -> Qwen2AudioForConditionalGeneration:
    """Freeze a 4-bit model for adapter training; optionally checkpoint activations.

    peft's ``prepare_model_for_kbit_training`` also casts every non-4-bit weight to float32:
    here the audio tower, the projector, ``embed_tokens`` and ``lm_head`` (1.9 B parameters),
    +3.8 GB on the GPU for frozen weights that bf16 autocast casts back for every matmul, and a
    float32 model wherever autocast is off. By default they stay in bf16, as in bf16 LoRA
    (``fp32_upcast`` restores peft's behaviour). Non-reentrant checkpointing needs no input grads.
    """
    if fp32_upcast:
        # Checkpointing is switched on below, not by peft: peft calls transformers' deprecated
        # gradient_checkpointing_enable (a FutureWarning); with use_reentrant False it does nothing else for it.
        from peft import prepare_model_for_kbit_training  # here: scoring a merged export needs no peft

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        for param in model.parameters():
            param.requires_grad_(False)
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return model


def _cast_features_hook(module: Qwen2AudioModel, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    """Cast the processor's float32 mel to the audio tower's dtype (the model itself does not)."""
    features = kwargs.get("input_features")
    if features is None:
        return None
    dtype = next(module.audio_tower.parameters()).dtype
    return None if features.dtype == dtype else (args, {**kwargs, "input_features": features.to(dtype)})


def load_model_and_processor(
    model_cfg: Mapping[str, Any], device: str | torch.device, for_training: bool
) -> tuple[Qwen2AudioForConditionalGeneration, Any]:
    """Load the checkpoint named by ``model.*`` params and its processor, ready for ``device``.

    Keys: ``preset`` (see qvad.model.presets), ``path`` (local dir for offline presets, hub id
    for real), ``quantization`` ('none' | 'bf16' | 'nf4'), ``dtype`` (float32 | bfloat16 | float16 |
    null), ``truncate_encoder`` (bool, default true), ``truncate_multiple`` (even int, default 2),
    ``gradient_checkpointing`` (bool, default false; training only), ``kbit_fp32_upcast`` (bool,
    default false: NF4 training keeps the non-4-bit weights in bf16, see _prepare_kbit_training),
    ``attn_implementation`` (default 'sdpa': PyTorch's fused attention kernels),
    ``fused_rms_norm`` (default true: torch's fused RMSNorm, on accelerators only; the CPU keeps
    the stock arithmetic), ``fast_attention`` (default true: the text model's attention from
    qvad.model.accel, same values as the stock one, with the one-kernel rotary embedding on CUDA
    and the shared-prefix path). On accelerators the MLP's activation runs as one kernel when
    scoring and the encoder's attention reads strided views (bit-identical); all of them are
    switched on by one ``qvad.model.accel.enable`` call, which checks the installed transformers
    first (qvad.model.accel.guard). Safetensors only
    and never remote code: a checkpoint must not be able to run code here. Returns the model in
    eval mode.
    """
    preset = model_cfg.get("preset")
    if preset not in PRESETS:
        raise ValueError(f"model.preset must be one of {PRESETS}, got {preset!r}")
    path = model_cfg.get("path")
    if not path:
        raise ValueError("model.path is required (local dir for an offline preset, hub id or dir for the real model)")
    if preset in LOCAL_PRESETS and not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(
            f"{preset} checkpoint not found at {path}: build it with qvad.model.store.prepare_base"
        )
    quant = model_cfg.get("quantization", "none")
    quant_config = _quantization_config(quant)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(
        path,
        dtype=_resolve_dtype(model_cfg),
        quantization_config=quant_config,
        device_map={"": torch.device(device)},
        attn_implementation=model_cfg.get("attn_implementation", "sdpa"),
        use_safetensors=True,
        trust_remote_code=False,
    )
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=False)
    if model.config.audio_token_id != processor.audio_token_id:
        raise ValueError(
            f"model audio_token_id {model.config.audio_token_id} != processor's {processor.audio_token_id}"
        )
    checkpointing = bool(model_cfg.get("gradient_checkpointing", False)) and for_training
    if for_training:
        # A training forward that is not told otherwise fills a KV cache (a copy of every layer's
        # keys and values) it never uses; scoring and generate pass use_cache explicitly.
        model.config.text_config.use_cache = False
    if for_training and quant_config is not None:
        model = _prepare_kbit_training(model, checkpointing, bool(model_cfg.get("kbit_fp32_upcast", False)))
    elif checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    # Without this a bf16 model fails on the processor's float32 mel ("Input type (float) and
    # bias type (BFloat16) should be the same"); here it holds for training, scoring and generate.
    model.model.register_forward_pre_hook(_cast_features_hook, with_kwargs=True)
    # The accelerator-only ones (norm, MLP, encoder attention) stay off on the CPU, whose bytes the
    # pipeline pins; the attention runs the stock arithmetic there.
    accel.enable(model, device, attention=bool(model_cfg.get("fast_attention", True)),
                 rms_norm=bool(model_cfg.get("fused_rms_norm", True)), mlp=True, encoder_attention=True)
    truncate_as_configured(model, model_cfg)
    model.eval()
    return model, processor
