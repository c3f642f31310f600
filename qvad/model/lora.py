"""LoRA on Qwen2-Audio: which modules take adapters, which train in full, which stay frozen.

The scope is anchored on module paths because peft matches name suffixes: a plain
``["q_proj", "k_proj", "v_proj", "o_proj"]`` would also adapt the audio tower's attention.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Iterator, Mapping

from peft import LoraConfig, PeftModel, get_peft_model
from transformers import Qwen2AudioForConditionalGeneration

from qvad.model.presets import FULLY_TRAINED, PRESETS

_LM_LAYERS = r"model\.language_model\.layers\.\d+\."
_AUDIO_LAYERS = r"model\.audio_tower\.layers\.({layers})\."
_LM_TARGETS = {
    "attention": r"self_attn\.(q_proj|k_proj|v_proj|o_proj)",
    "attention+mlp": r"(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))",
}
_AUDIO_TARGETS = {
    # The Whisper-style encoder names its attention output ``out_proj`` and its MLP ``fc1``/``fc2``.
    "attention": r"self_attn\.(q_proj|k_proj|v_proj|out_proj)",
    "attention+mlp": r"(self_attn\.(q_proj|k_proj|v_proj|out_proj)|fc1|fc2)",
}


@contextlib.contextmanager
def peft_wrapping() -> Iterator[None]:
    """Around peft wrapping a model (``get_peft_model``, ``PeftModel.from_pretrained``): peft 0.21
    reads transformers' ``is_gradient_checkpointing``, deprecated for ``is_activation_checkpointing``,
    and would print a FutureWarning on every load. Only that warning is hidden, only here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def lora_target_regex(targets: str, audio_layers: range = range(0)) -> str:
    """Full-match regex over module names: LM layers' projections, plus those of ``audio_layers``.

    A plain list like ``["q_proj", "k_proj", "v_proj", "o_proj"]`` would also hit the audio
    tower's q/k/v (peft matches name suffixes), so the scope is anchored on the module path.
    """
    if targets not in _LM_TARGETS:
        raise ValueError(f"lora.targets must be one of {sorted(_LM_TARGETS)}, got {targets!r}")
    pattern = _LM_LAYERS + _LM_TARGETS[targets]
    if len(audio_layers):
        layers = "|".join(str(i) for i in audio_layers)
        pattern = f"({pattern})|({_AUDIO_LAYERS.format(layers=layers)}{_AUDIO_TARGETS[targets]})"
    return pattern


def adapted_audio_layers(lora_cfg: Mapping[str, Any], n_layers: int) -> range:
    """Indices of the encoder layers that take LoRA: the last ``lora.audio_layers`` of ``n_layers``.

    The last ones, because a frozen front then stays cacheable (qvad.model.encoder_cache): its
    output for a clip is computed once, and only the adapted layers run in every step.
    """
    count = lora_cfg.get("audio_layers", 0)
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= n_layers:
        raise ValueError(f"lora.audio_layers must be an integer from 0 (encoder frozen) to {n_layers} "
                         f"(all of this encoder's layers), got {count!r}")
    return range(n_layers - count, n_layers)


def apply_lora(
    model: Qwen2AudioForConditionalGeneration, lora_cfg: Mapping[str, Any], preset: str
) -> tuple[PeftModel, dict[str, int]]:
    """Wrap ``model`` with LoRA per ``lora.*`` params; return the peft model and parameter counts.

    Keys: ``r``, ``alpha``, ``dropout``, ``targets`` ('attention' | 'attention+mlp'),
    ``audio_layers`` (how many of the encoder's last layers take LoRA too; default 0). Modules a
    preset has no pretrained weights for (``FULLY_TRAINED``: for 'tiny' the audio tower and
    projector, for 'whisper-tiny' the projector) are trained in full (peft ``modules_to_save``,
    hence saved with the adapter) while the language model takes LoRA. Counts: ``total`` (all
    parameters, peft's trainable copies included), ``trainable``, ``lora``, ``full`` (trainable
    non-LoRA parameters).
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    audio_layers = adapted_audio_layers(lora_cfg, model.config.audio_config.encoder_layers)
    full = FULLY_TRAINED[preset]
    if len(audio_layers) and "model.audio_tower" in full:
        raise ValueError(
            f"lora.audio_layers is meaningless for preset {preset!r}: its audio tower is trained in full"
        )
    config = LoraConfig(
        r=int(lora_cfg["r"]),
        lora_alpha=lora_cfg["alpha"],
        lora_dropout=float(lora_cfg.get("dropout", 0.0)),
        target_modules=lora_target_regex(lora_cfg.get("targets", "attention"), audio_layers),
        modules_to_save=[name.rsplit(".", 1)[-1] for name in full] or None,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with peft_wrapping():
        peft_model = get_peft_model(model, config)
    trainable, total = peft_model.get_nb_trainable_parameters()
    lora = sum(p.numel() for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" in n)
    counts = {"total": int(total), "trainable": int(trainable), "lora": int(lora), "full": int(trainable - lora)}
    if lora == 0:
        raise RuntimeError(f"LoRA matched no module with pattern {config.target_modules!r}")
    return peft_model, counts


def training_roles(peft_model: PeftModel) -> dict[str, dict[str, object]]:
    """Per top-level part (audio tower, projector, language model, lm_head): how it is trained.

    ``role`` is 'LoRA' (adapters on it, base weights frozen), 'full' (every weight trains) or
    'frozen'; with the parameter counts behind it, so metrics/train.json says what learned.
    """
    parts = {"audio_tower": "audio_tower", "multi_modal_projector": "multi_modal_projector",
             "language_model": "language_model", "lm_head": "lm_head"}
    stats = {name: {"lora": 0, "full": 0, "frozen": 0} for name in parts}
    for name, param in peft_model.named_parameters():
        part = next((p for p in parts if f".{p}." in f".{name}."), None)
        if part is None:
            continue
        if "original_module" in name:  # peft keeps the untouched original beside a modules_to_save copy
            continue
        kind = "lora" if "lora_" in name else ("full" if param.requires_grad else "frozen")
        stats[part][kind] += param.numel()
    roles = {}
    for part, counts in stats.items():
        role = "LoRA" if counts["lora"] else ("full" if counts["full"] and not counts["frozen"] else
                                              "frozen" if not counts["full"] else "partly trained")
        roles[part] = {"role": role, "parameters": {k: int(v) for k, v in counts.items()}}
    return roles
