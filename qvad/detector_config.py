"""``models/detector.json``, the contract between the evaluate stage and the detector.

The evaluate stage writes it (:func:`detector_config`); :class:`DetectorConfig` reads and
validates it for :class:`qvad.detector.Detector`, naming the file and the key in every error, so a
model folder copied elsewhere either scores exactly as it was evaluated or says what is wrong
(the fields are listed in qvad.detector's docstring). :func:`check_model_dir` checks the rest of
a model folder: ``base/`` and ``adapter/``, or, for a merged export (``qvad export``), the
checkpoint in the folder itself, which ``detector.json`` marks with ``export.merged: true``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

DETECTOR_FILE = "detector.json"
EXPORT_KEY = "export"
"""detector.json's block written by ``qvad export``; ``merged: true`` means no adapter is needed."""

_NUMBER = (int, float)


class DetectorConfigError(ValueError):
    """A model folder that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class DetectorConfig:
    """``models/detector.json``: what reproduces the training-time input, and the decision."""

    prompt: dict
    container_ms: int
    container_noise_rel_db: float
    normalize: dict
    answer_tokens: tuple[str, str]
    temperature: float
    threshold: float
    window_ms: int
    hop_ms: int
    model: dict
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Any, source: str | os.PathLike = DETECTOR_FILE) -> "DetectorConfig":
        """Validate ``raw`` (the parsed JSON); :class:`DetectorConfigError` names ``source`` and the key."""
        from qvad.data.level import METHODS
        from qvad.model.prompt import ANSWER_NONSPEECH, ANSWER_SPEECH, AUDIO_POSITIONS, audio_position

        def fail(key: str, message: str) -> DetectorConfigError:
            return DetectorConfigError(f"{source}: {key}: {message}")

        def need(node: Mapping, key: str, types: type | tuple, where: str = "") -> Any:
            name = f"{where}{key}"
            if key not in node:
                raise fail(name, "missing key")
            value = node[key]
            if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
                raise fail(name, f"expected {_type_names(types)}, got a boolean")
            if not isinstance(value, types):
                raise fail(name, f"expected {_type_names(types)}, got {type(value).__name__} {value!r}")
            return value

        if not isinstance(raw, Mapping):
            raise DetectorConfigError(f"{source}: expected a JSON object at the top level")
        prompt = need(raw, "prompt", Mapping)
        for key in ("system", "user"):
            if not need(prompt, key, str, "prompt.").strip():
                raise fail(f"prompt.{key}", "must not be empty")
        try:
            position = audio_position(prompt)  # older files have none: audio first
        except ValueError:
            raise fail("prompt.audio_position",
                       f"must be one of {list(AUDIO_POSITIONS)}, got {prompt.get('audio_position')!r}") from None
        container_ms = need(raw, "container_ms", int)
        if container_ms < 0:
            raise fail("container_ms", f"must be >= 0 (0: no container), got {container_ms}")
        rel_db = float(need(raw, "container_noise_rel_db", _NUMBER))
        if not math.isfinite(rel_db):
            raise fail("container_noise_rel_db", f"must be finite, got {rel_db}")
        norm = dict(need(raw, "normalize", Mapping))
        method = need(norm, "method", str, "normalize.")
        if method not in METHODS:
            raise fail("normalize.method", f"must be one of {METHODS}, got {method!r}")
        if method == "peak":
            if not 0 < float(need(norm, "peak_target", _NUMBER, "normalize.")) <= 1:
                raise fail("normalize.peak_target", f"must be within (0, 1], got {norm['peak_target']}")
            if float(need(norm, "headroom_db", _NUMBER, "normalize.")) < 0:
                raise fail("normalize.headroom_db", f"must be >= 0, got {norm['headroom_db']}")
        if method == "rms":
            need(norm, "rms_dbfs", _NUMBER, "normalize.")
        tokens = need(raw, "answer_tokens", (list, tuple))
        if list(tokens) != [ANSWER_SPEECH, ANSWER_NONSPEECH]:
            raise fail("answer_tokens", f"the scorer reads {ANSWER_SPEECH!r} = speech and {ANSWER_NONSPEECH!r} = "
                                        f"non-speech, got {list(tokens)!r}")
        temperature = float(need(raw, "temperature", _NUMBER))
        if not (math.isfinite(temperature) and temperature > 0):
            raise fail("temperature", f"must be > 0, got {temperature}")
        threshold = float(need(raw, "threshold", _NUMBER))
        if not 0 <= threshold <= 1:
            raise fail("threshold", f"must be within [0, 1], got {threshold}")
        window_ms, hop_ms = need(raw, "window_ms", int), need(raw, "hop_ms", int)
        if window_ms <= 0:
            raise fail("window_ms", f"must be > 0, got {window_ms}")
        if hop_ms <= 0:
            raise fail("hop_ms", f"must be > 0, got {hop_ms}")
        model = dict(need(raw, "model", Mapping))
        need(model, "preset", str, "model.")
        known = {f.name for f in cls.__dataclass_fields__.values()} - {"extra"}
        return cls(prompt={"system": prompt["system"], "user": prompt["user"], "audio_position": position},
                   container_ms=container_ms,
                   container_noise_rel_db=rel_db, normalize=norm, answer_tokens=(tokens[0], tokens[1]),
                   temperature=temperature, threshold=threshold, window_ms=window_ms, hop_ms=hop_ms,
                   model=model, extra={k: v for k, v in raw.items() if k not in known})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DetectorConfig":
        """Read and validate a detector.json file."""
        path = Path(path)
        if not path.is_file():
            raise DetectorConfigError(f"{path}: not found: the evaluate stage writes it next to models/adapter "
                                      "(run `dvc repro evaluate`)")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DetectorConfigError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_dict(raw, path)

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "extra"}
        out["answer_tokens"] = list(self.answer_tokens)
        return {**self.extra, **out}


def _type_names(types: type | tuple) -> str:
    names = {int: "an integer", float: "a number", str: "a string", Mapping: "an object", list: "a list",
             tuple: "a list", bool: "a boolean"}
    seq = types if isinstance(types, tuple) else (types,)
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in seq))


def detector_config(params: Mapping[str, Any], temperature: float, threshold: float = 0.5,
                    window_ms: int | None = None, hop_ms: int | None = None,
                    prompt: Mapping[str, str] | None = None) -> dict:
    """The ``models/detector.json`` contract from params.yaml and the dev-fitted temperature.

    ``prompt`` is the one the model is scored with (evaluate passes optimize_prompt's choice);
    None takes ``prompt.*`` from params, the training prompt.

    ``window_ms`` defaults to the longest training clip (``max(mix.durations_ms)``), the longest
    stretch of audio the model has learnt to judge inside its container; ``hop_ms`` to half of it.
    """
    from qvad.model.prompt import audio_position

    mix, norm = params["mix"], params["normalize"]
    chosen = prompt or params["prompt"]
    window = int(window_ms if window_ms is not None else max(mix["durations_ms"]))
    return {
        "prompt": {"system": chosen["system"], "user": chosen["user"],
                   "audio_position": audio_position(chosen)},
        "container_ms": int(mix["container_ms"]),
        "container_noise_rel_db": float(mix["container_noise_rel_db"]),
        "normalize": {k: norm[k] for k in ("method", "peak_target", "headroom_db", "rms_dbfs")},
        "answer_tokens": ["A", "B"],
        "temperature": float(temperature),
        "threshold": float(threshold),
        "window_ms": window,
        "hop_ms": int(hop_ms if hop_ms is not None else max(window // 2, 1)),
        "model": dict(params["model"]),
    }


def is_merged_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a merged export: a checkpoint whose detector.json says ``export.merged: true``."""
    root = Path(path)
    cfg = root / DETECTOR_FILE
    if not ((root / "config.json").is_file() and cfg.is_file()):
        return False
    try:
        raw = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False  # DetectorConfig.load reports it, naming the file
    block = raw.get(EXPORT_KEY) if isinstance(raw, Mapping) else None
    return isinstance(block, Mapping) and block.get("merged") is True


def check_model_dir(path: str | os.PathLike) -> tuple[Path, Path | None, Path]:
    """``(base, adapter, detector.json)`` of a model folder, or a DetectorConfigError naming what is missing.

    A merged export is its own base and has no adapter: ``(path, None, path/detector.json)``.
    """
    root = Path(path)
    if not root.is_dir():
        raise DetectorConfigError(f"{root}: model folder not found (expected base/, adapter/ and {DETECTOR_FILE})")
    if is_merged_export(root):
        return root, None, root / DETECTOR_FILE
    base, adapter, cfg = root / "base", root / "adapter", root / DETECTOR_FILE
    if not ((base / "config.json").is_file() or (base / "source.json").is_file()):
        raise DetectorConfigError(f"{base}: no base model (neither config.json nor source.json)")
    if not (adapter / "adapter_config.json").is_file():
        raise DetectorConfigError(f"{adapter}: no LoRA adapter (adapter_config.json missing)")
    return base, adapter, cfg
