"""LoRA on Qwen2-Audio: which modules take adapters, which train in full, which stay frozen.

The scope is anchored on module paths because peft matches name suffixes: a plain
``["q_proj", "k_proj", "v_proj", "o_proj"]`` would also adapt the audio tower's attention.
"""

from __future__ import annotations

from typing import Any, Mapping

from peft import LoraConfig, PeftModel, get_peft_model
from transformers import Qwen2AudioForConditionalGeneration

from qvad.model.loading import AUDIO_MODULES
from qvad.model.presets import PRESETS

_LM_LAYERS = r"model\.language_model\.layers\.\d+\."
_AUDIO_LAYERS = r"model\.audio_tower\.layers\.\d+\."
_LM_TARGETS = {
    "attention": r"self_attn\.(q_proj|k_proj|v_proj|o_proj)",
    "attention+mlp": r"(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))",
}
_AUDIO_TARGETS = {
    # The Whisper-style encoder names its attention output ``out_proj`` and its MLP ``fc1``/``fc2``.
    "attention": r"self_attn\.(q_proj|k_proj|v_proj|out_proj)",
    "attention+mlp": r"(self_attn\.(q_proj|k_proj|v_proj|out_proj)|fc1|fc2)",
}


def lora_target_regex(targets: str, include_audio_tower: bool) -> str:
    """Full-match regex over module names: LM layers' projections, plus the encoder's only if asked.

    A plain list like ``["q_proj", "k_proj", "v_proj", "o_proj"]`` would also hit the audio
    tower's q/k/v (peft matches name suffixes), so the scope is anchored on the module path.
    """
    if targets not in _LM_TARGETS:
        raise ValueError(f"lora.targets must be one of {sorted(_LM_TARGETS)}, got {targets!r}")
    pattern = _LM_LAYERS + _LM_TARGETS[targets]
    if include_audio_tower:
        pattern = f"({pattern})|({_AUDIO_LAYERS}{_AUDIO_TARGETS[targets]})"
    return pattern


def apply_lora(
    model: Qwen2AudioForConditionalGeneration, lora_cfg: Mapping[str, Any], preset: str
) -> tuple[PeftModel, dict[str, int]]:
    """Wrap ``model`` with LoRA per ``lora.*`` params; return the peft model and parameter counts.

    Keys: ``r``, ``alpha``, ``dropout``, ``targets`` ('attention' | 'attention+mlp'),
    ``include_audio_tower`` (default false). For preset 'tiny' nothing is pretrained, so the audio
    tower and projector are trained in full (peft ``modules_to_save``, hence saved with the
    adapter) while the language model takes LoRA. Counts: ``total`` (all parameters, peft's
    trainable copies included), ``trainable``, ``lora``, ``full`` (trainable non-LoRA parameters).
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    include_audio = bool(lora_cfg.get("include_audio_tower", False))
    if preset == "tiny" and include_audio:
        raise ValueError(
            "lora.include_audio_tower is meaningless for preset 'tiny': its audio tower is trained in full"
        )
    config = LoraConfig(
        r=int(lora_cfg["r"]),
        lora_alpha=lora_cfg["alpha"],
        lora_dropout=float(lora_cfg.get("dropout", 0.0)),
        target_modules=lora_target_regex(lora_cfg.get("targets", "attention"), include_audio),
        modules_to_save=[name.rsplit(".", 1)[-1] for name in AUDIO_MODULES] if preset == "tiny" else None,
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    trainable, total = peft_model.get_nb_trainable_parameters()
    lora = sum(p.numel() for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" in n)
    counts = {"total": int(total), "trainable": int(trainable), "lora": int(lora), "full": int(trainable - lora)}
    if lora == 0:
        raise RuntimeError(f"LoRA matched no module with pattern {config.target_modules!r}")
    return peft_model, counts
