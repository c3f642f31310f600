"""What an export refuses, before any weights are loaded, each error naming the path and the problem.

* a models folder without ``detector.json``, a base, or a trained adapter;
* an adapter made for another base: its ``adapter_config.json`` names another hub id, or one
  of its tensors does not fit the base module it adapts (a LoRA ``A``/``B`` pair against the
  module's in/out features, a fully trained module against the base's parameter). peft itself
  would stop only at the first size mismatch, and merely warn about modules it cannot find;
* an output folder that exists and is not empty (unless ``force``), or one that overlaps the
  models folder (replacing it would delete the source).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from qvad.detector_config import DETECTOR_FILE, is_merged_export

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
"""How peft names a saved tensor: this prefix, then the path of the parameter in the base model."""


class ExportError(ValueError):
    """An export that cannot be made faithfully; the message names the path and the problem."""


@dataclass(frozen=True)
class Source:
    """A trained models folder: ``base/``, ``adapter/`` and ``detector.json``."""

    root: Path
    base: Path
    adapter: Path
    detector: Path

    @property
    def hub_id(self) -> str | None:
        """The hub id in ``base/source.json`` (the real model), None for a base saved in place."""
        source = self.base / "source.json"
        return json.loads(source.read_text(encoding="utf-8"))["hub_id"] if source.is_file() else None

    @property
    def base_path(self) -> str:
        """What ``from_pretrained`` loads the base from: the hub id or the local folder."""
        return self.hub_id or str(self.base)


def check_source(models_dir: str | Path) -> Source:
    """The parts of a trained models folder, or an :class:`ExportError` saying which one is missing."""
    root = Path(models_dir)
    if not root.is_dir():
        raise ExportError(f"{root}: models folder not found (expected base/, adapter/ and {DETECTOR_FILE})")
    if is_merged_export(root):
        raise ExportError(f"{root}: already a merged export (no adapter left to merge); load it with "
                          "Detector.from_dir or transformers directly")
    detector = root / DETECTOR_FILE
    if not detector.is_file():
        raise ExportError(f"{detector}: not found: the evaluate stage writes it (run `dvc repro evaluate`)")
    base = root / "base"
    if not ((base / "config.json").is_file() or (base / "source.json").is_file()):
        raise ExportError(f"{base}: no base model (neither config.json nor source.json): run `dvc repro train`")
    adapter = root / "adapter"
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (adapter / name).is_file():
            raise ExportError(f"{adapter / name}: not found: no trained adapter (run `dvc repro train`)")
    return Source(root, base, adapter, detector)


def check_adapter_fits(source: Source) -> None:
    """Refuse an adapter whose recorded base or tensor shapes do not match ``source.base``.

    The base is built on the meta device from its config alone, so this costs no weights.
    """
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, Qwen2AudioForConditionalGeneration

    cfg_path = source.adapter / ADAPTER_CONFIG
    try:
        adapter_cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{cfg_path}: not valid JSON ({exc})") from exc
    if adapter_cfg.get("peft_type") != "LORA":
        raise ExportError(f"{cfg_path}: peft_type is {adapter_cfg.get('peft_type')!r}; only LoRA adapters merge here")
    recorded = adapter_cfg.get("base_model_name_or_path")
    if source.hub_id is not None and recorded != source.hub_id:
        raise ExportError(f"{cfg_path}: base_model_name_or_path is {recorded!r} but {source.base / 'source.json'} "
                          f"names {source.hub_id!r}: the adapter was trained on another base")
    config = AutoConfig.from_pretrained(source.base_path, trust_remote_code=False)
    if config.model_type != "qwen2_audio":
        raise ExportError(f"{source.base}: model_type is {config.model_type!r}, expected 'qwen2_audio'")
    with torch.device("meta"):
        base = Qwen2AudioForConditionalGeneration(config)
    params = {name: tuple(p.shape) for name, p in base.named_parameters()}
    weights = source.adapter / ADAPTER_WEIGHTS
    with safe_open(str(weights), framework="pt") as tensors:
        for key in tensors.keys():
            shape = tuple(tensors.get_slice(key).get_shape())
            problem = _misfit(key, shape, params, int(adapter_cfg.get("r", 0)))
            if problem:
                raise ExportError(f"{weights}: {key}: {problem}: the adapter was trained on another base "
                                  f"than {source.base}")


def _misfit(key: str, shape: tuple[int, ...], params: dict[str, tuple[int, ...]], rank: int) -> str:
    """Why the saved tensor ``key`` does not fit the base's parameters (empty when it does)."""
    if not key.startswith(PEFT_PREFIX):
        return f"unexpected tensor name (expected the prefix {PEFT_PREFIX!r})"
    name = key[len(PEFT_PREFIX):]
    for part, axis in ((".lora_A.weight", 1), (".lora_B.weight", 0)):
        if name.endswith(part):
            module = name[: -len(part)] + ".weight"
            if module not in params:
                return f"the base has no module {module[: -len('.weight')]!r}"
            want = params[module][axis]  # Linear weight [out, in]: A is [r, in], B is [out, r]
            if len(shape) != 2 or shape[axis] != want or shape[1 - axis] != rank:
                expected = (rank, want) if axis == 1 else (want, rank)
                return f"shape {list(shape)}, expected {list(expected)} for the base's {list(params[module])}"
            return ""
    if name not in params:
        return f"the base has no parameter {name!r}"
    if params[name] != shape:
        return f"shape {list(shape)}, the base's parameter has {list(params[name])}"
    return ""


def check_out_dir(out_dir: str | Path, models_dir: str | Path, force: bool) -> None:
    """Refuse an ``out_dir`` that holds files (unless ``force``), is a file, or overlaps the models."""
    out, models = Path(out_dir).resolve(), Path(models_dir).resolve()
    if out == models or models in out.parents or out in models.parents:
        raise ExportError(f"{out_dir}: overlaps the models folder {models_dir}; export to a folder outside it")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out_dir}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"{out_dir}: exists and is not empty; pass --force to replace it (its files are "
                          "removed only after the new export is complete)")
