"""Which transformers code each patch mirrors, and the check that it is still the code installed.

Several forwards here copy a stock transformers forward step for step and change one part of it
(the shared prefix, the rotary kernel, the answer slot), and others rely on how a stock forward
hands its arguments on (a dict ``attention_mask``, extra keywords reaching every layer). They
were written against :data:`PINNED_TRANSFORMERS`. Another release may reorder a signature or
change a step, and a copy would then compute something else without failing: in older releases
``Qwen2DecoderLayer.forward`` took ``cache_position`` before ``position_embeddings``.

:data:`STOCK` names, for every module that mirrors or relies on stock code, the stock functions it
depends on; each such place carries a ``# Mirrors <stock name>`` or ``# Relies on <stock name>``
comment, as transformers marks its own copies with ``# Copied from``. :data:`FINGERPRINTS` holds
the sha256 of each one's source in the pinned release. :func:`stale` reports, for the modules
asked about, the stock functions whose installed source differs (nothing when the installed
version is the pinned one).

On a difference the speed-up is left off and the stock path runs, with one warning naming the
module and what differs (:func:`warn_stale`). Not an error: the stock path is the reference every
speed-up is tested against, so results stay right and only speed is lost, and a user who needs
another transformers for another reason can still run. A developer finds out earlier:
tests/test_accel_guard.py compares every fingerprint with the installed source and fails naming
the stock function to re-read and the qvad module to re-check.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import warnings
from functools import cache
from typing import Iterable

import transformers

PINNED_TRANSFORMERS = "5.23.0"
"""The transformers release the mirrors were written against (requirements.txt pins it)."""

_QWEN2 = "transformers.models.qwen2.modeling_qwen2"
_AUDIO = "transformers.models.qwen2_audio.modeling_qwen2_audio"

FINGERPRINTS: dict[str, str] = {
    f"{_QWEN2}.Qwen2Attention.forward": "3d7ae1485294d0c8",
    f"{_QWEN2}.eager_attention_forward": "cb34ccea28710ae8",
    f"{_QWEN2}.rotate_half": "f714a4b1160c694e",
    f"{_QWEN2}.apply_rotary_pos_emb": "ea234325c15de475",
    f"{_QWEN2}.Qwen2DecoderLayer.forward": "75d1d62e173e8c57",
    f"{_QWEN2}.Qwen2MLP.forward": "03df2d7685cf8446",
    f"{_QWEN2}.Qwen2RMSNorm.forward": "790fa612e4fa57ac",
    f"{_QWEN2}.Qwen2Model.forward": "7fb64c79b3ddce2f",
    f"{_AUDIO}.Qwen2AudioAttention.forward": "7cc7a3c4faee5f33",
    f"{_AUDIO}.eager_attention_forward": "ee12a4f4b2571ede",
    f"{_AUDIO}.Qwen2AudioEncoderLayer.forward": "26f76fe37863f5a1",
    f"{_AUDIO}.Qwen2AudioEncoder.forward": "4175de133a510803",
    f"{_AUDIO}.Qwen2AudioModel.forward": "16049c6412359f32",
}
"""sha256 (first 16 hex digits) of ``inspect.getsource`` of each stock function, transformers 5.23.0."""

STOCK: dict[str, tuple[str, ...]] = {
    "qvad.model.accel.shared_prefix": (f"{_QWEN2}.Qwen2Model.forward", f"{_QWEN2}.Qwen2DecoderLayer.forward",
                                       f"{_AUDIO}.Qwen2AudioModel.forward"),
    "qvad.model.accel.decoder_attention": (f"{_QWEN2}.Qwen2Attention.forward", f"{_QWEN2}.eager_attention_forward"),
    "qvad.model.accel.kernels.rotary": (f"{_QWEN2}.rotate_half", f"{_QWEN2}.apply_rotary_pos_emb"),
    "qvad.model.accel.decoder_answer_slot": (f"{_QWEN2}.Qwen2DecoderLayer.forward",),
    "qvad.model.accel.decoder_residual_gemm": (f"{_QWEN2}.Qwen2DecoderLayer.forward", f"{_QWEN2}.Qwen2MLP.forward"),
    "qvad.model.accel.decoder_mlp": (f"{_QWEN2}.Qwen2MLP.forward",),
    "qvad.model.accel.decoder_norm": (f"{_QWEN2}.Qwen2RMSNorm.forward",),
    "qvad.model.accel.encoder_attention": (f"{_AUDIO}.Qwen2AudioAttention.forward",
                                           f"{_AUDIO}.eager_attention_forward"),
    "qvad.model.encoder_truncation": (f"{_AUDIO}.Qwen2AudioEncoder.forward", f"{_AUDIO}.Qwen2AudioEncoderLayer.forward",
                                      f"{_AUDIO}.Qwen2AudioModel.forward"),
    "qvad.model.encoder_cache": (f"{_AUDIO}.Qwen2AudioEncoder.forward", f"{_AUDIO}.Qwen2AudioModel.forward"),
}
"""For each qvad module, the stock functions it mirrors or relies on."""


def stock_object(name: str) -> object:
    """The stock function named ``module.path.Class.method`` or ``module.path.function``."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"no module in {name!r}")


@cache
def fingerprint(name: str) -> str:
    """sha256 (16 hex digits) of the installed source of stock function ``name``; '' if it is gone
    or its source cannot be read (either way it no longer matches)."""
    try:
        source = inspect.getsource(stock_object(name))
    except (ImportError, AttributeError, OSError, TypeError):
        return ""
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def stale(modules: Iterable[str], version: str | None = None) -> dict[str, list[str]]:
    """For each of ``modules`` (keys of :data:`STOCK`), the stock functions it depends on whose installed
    source is not the pinned one; modules with none are left out. With the pinned transformers
    installed (``version``, default the installed one) nothing is stale and no source is read."""
    version = transformers.__version__ if version is None else version
    if version == PINNED_TRANSFORMERS:
        return {}
    found = {}
    for module in modules:
        changed = [name for name in STOCK[module] if fingerprint(name) != FINGERPRINTS[name]]
        if changed:
            found[module] = changed
    return found


def warn_stale(found: dict[str, list[str]]) -> None:
    """One warning naming every module left off and the stock functions that differ (none if empty)."""
    if not found:
        return
    listed = "; ".join(f"{module} (differs: {', '.join(names)})" for module, names in found.items())
    warnings.warn(
        f"transformers {transformers.__version__} is installed, but qvad's patches mirror transformers "
        f"{PINNED_TRANSFORMERS}: these stay off and the stock path runs instead (same results, slower): {listed}. "
        "Re-check each against the installed source and update qvad/model/accel/guard.py "
        "(tests/test_accel_guard.py lists what changed).",
        RuntimeWarning,
        stacklevel=3,
    )
