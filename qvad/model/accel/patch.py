"""Per-instance forward replacement: the one mechanism behind every forward that qvad swaps.

transformers calls ``module.forward``. An instance attribute shadows the class's method, so one
model runs the replacement while every other instance of the class (another model in the process,
a test's reference copy) keeps the stock code, and deleting the attribute restores it. Its users:
the accel speed-ups (``Qwen2Attention``, ``Qwen2DecoderLayer``, ``Qwen2MLP``, ``Qwen2RMSNorm``,
``Qwen2AudioAttention``), qvad.model.encoder_truncation and qvad.model.encoder_cache (the audio
encoder). Nothing else assigns a ``forward``.
"""

from __future__ import annotations

import types
from typing import Any, Callable, Iterable

from torch import nn


def runs_forward(module: nn.Module, forward: Callable[..., Any]) -> bool:
    """Whether ``module`` runs ``forward`` as its instance forward."""
    return getattr(module.__dict__.get("forward"), "__func__", None) is forward


def patch_forward(modules: Iterable[nn.Module], forward: Callable[..., Any], **attrs: Any) -> int:
    """Bind ``forward`` as the instance forward of each of ``modules`` (idempotent), with ``attrs``
    set on each as options it reads; returns how many."""
    count = 0
    for module in modules:
        module.forward = types.MethodType(forward, module)
        for name, value in attrs.items():
            setattr(module, name, value)
        count += 1
    return count


def restore_forward(modules: Iterable[nn.Module], forward: Callable[..., Any]) -> int:
    """Give each of ``modules`` that runs ``forward`` its class's forward back; returns how many.
    Forwards installed by anything else (an accelerate hook, say) are left as they are."""
    count = 0
    for module in modules:
        if runs_forward(module, forward):
            del module.forward
            count += 1
    return count


def modules_of(model: nn.Module, module_type: type[nn.Module]) -> list[nn.Module]:
    """Every submodule of ``model`` (itself included) that is a ``module_type``."""
    return [m for m in model.modules() if isinstance(m, module_type)]
