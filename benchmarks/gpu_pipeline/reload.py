"""The saved adapter, reloaded as the evaluate stage loads it, holds exactly the trained tensors.

    python -m benchmarks.gpu_pipeline.stage reload RESULT_DETAIL.json

Loads ``models/base`` + ``models/adapter`` through ``qvad.model.store.load_trained`` with the
params in ./params.yaml (what evaluate, psychometric and ``qvad predict`` call) and compares every
tensor of ``models/adapter/adapter_model.safetensors`` with the loaded model's adapter state.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import get_peft_model_state_dict
from safetensors.torch import load_file

from qvad.common.params import get, load_params
from qvad.model.store import ADAPTER, load_trained


def main(args: list[str]) -> int:
    """0 when every saved tensor is in the loaded model with the same values; writes the detail to ``args[0]``."""
    model, _ = load_trained(get(load_params(), "model"), adapter=ADAPTER)
    saved = load_file(str(ADAPTER / "adapter_model.safetensors"))
    loaded = get_peft_model_state_dict(model)
    missing = sorted(set(saved) - set(loaded))
    differ = sorted(k for k in set(saved) & set(loaded)
                    if not torch.equal(saved[k].to(loaded[k].device, loaded[k].dtype), loaded[k]))
    lora_modules = sum(1 for m in model.modules() if hasattr(m, "lora_A") and len(m.lora_A))
    detail = {"saved_tensors": len(saved), "missing_after_reload": missing[:10], "n_missing": len(missing),
              "differing": differ[:10], "n_differing": len(differ), "lora_modules": lora_modules,
              "peft_model": type(model).__name__}
    Path(args[0]).write_text(json.dumps(detail, indent=2) + "\n")
    print(json.dumps(detail))
    return 0 if saved and not missing and not differ and lora_modules > 0 else 1
