"""The adapter folded into its base with peft's ``merge_and_unload``, saved as a plain checkpoint.

The merge runs in float32 whatever the training dtype: an adapter trained on an NF4 (QLoRA) or
bf16 base is merged into the *unquantised* base weights, loaded in float32, and the result is
cast once to the saved dtype. Merging into the 4-bit weights would re-quantise the sum (peft
refuses or dequantises and requantises); merging in bf16 would round the LoRA delta before the
addition and the sum after it. The saved dtype defaults to what the model ran in: float32 for a
float32 run, bfloat16 for bf16 and NF4 runs (the unquantised bf16 base plus the delta, the
checkpoint QLoRA users serve).

Nothing of the scoring fast paths (qvad.model.loading's patched forwards and hooks) is loaded:
the base comes from ``from_pretrained`` as anyone would load it, so the saved folder holds only
transformers' own classes and the processor.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

from qvad.common.atomic import _umask
from qvad.export.checks import Source

SAVE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def saved_dtype(model_cfg: Mapping[str, Any], requested: str | None = None) -> str:
    """The dtype to save: ``requested``, else float32 for a float32 run and bfloat16 otherwise."""
    if requested is not None:
        if requested not in SAVE_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(SAVE_DTYPES)}, got {requested!r}")
        return requested
    quant = model_cfg.get("quantization", "none")
    dtype = model_cfg.get("dtype") or ("bfloat16" if quant in ("bf16", "nf4") else "float32")
    return "float32" if quant == "none" and dtype == "float32" else "bfloat16"


def merged_model(source: Source, dtype: str) -> tuple[torch.nn.Module, Any]:
    """Base (float32, unquantised) + adapter, merged by peft, cast to ``dtype``; and the processor."""
    from peft import PeftModel
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    base = Qwen2AudioForConditionalGeneration.from_pretrained(
        source.base_path, dtype=torch.float32, device_map={"": "cpu"}, use_safetensors=True,
        trust_remote_code=False)
    processor = AutoProcessor.from_pretrained(source.base_path, trust_remote_code=False)
    with warnings.catch_warnings():  # peft reads transformers' deprecated is_gradient_checkpointing
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = PeftModel.from_pretrained(base, str(source.adapter), is_trainable=False)
    # safe_merge: refuse (instead of saving) a merge that produced NaN or inf weights
    model = peft_model.merge_and_unload(safe_merge=True)
    model = model.to(SAVE_DTYPES[dtype])
    model.eval()
    return model, processor


def save_merged(model: torch.nn.Module, processor: Any, out_dir: Path) -> None:
    """Save weights (safetensors: transformers 5 writes nothing else) and the processor into ``out_dir``.

    The permissions are those any new file gets, so a server running as another user can read them.
    """
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    for path in out_dir.iterdir():  # transformers leaves the weights 0600: give them what open() would
        path.chmod(0o666 & ~_umask())
    pickled = sorted(p.name for p in out_dir.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl"))
    if pickled or not any(out_dir.glob("*.safetensors")):
        raise RuntimeError(f"{out_dir}: expected safetensors weights only, found {pickled or 'no safetensors'}")
