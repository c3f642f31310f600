"""The A/B scorer split across the processes of a group, its answers gathered back in clip order.

:func:`score_ab_logits` has :func:`qvad.model.scoring.score_ab_logits`'s signature and result. In a
group of N processes it forms exactly the batches one process would (clips longest first, in
``batch_size`` chunks), hands each process a contiguous share of those whole batches
(accelerate's ``split_between_processes``), scores them there and gathers every process's
``(clip indices, logits)`` back into the caller's order on all processes. Each batch is the same
rows, in the same order, with the same shared prompt prefix and the same threads as in one
process, so the logits are bitwise those of a one-process run (tests/test_data_parallel.py).
Outside a group it is the one-process scorer itself.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch.distributed as dist
from scipy.special import expit
from torch import nn

from qvad.model import scoring


def batches(audios: Sequence[np.ndarray], batch_size: int) -> list[np.ndarray]:
    """Clip indices of each batch the one-process scorer forms (longest first, stable order)."""
    order = np.argsort([-len(a) for a in audios], kind="stable")
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def score_ab_logits(model: nn.Module, processor: Any, audios: Sequence[np.ndarray],
                    prompt_cfg: Mapping[str, Any] | None, batch_size: int, feature_device: str | None = None,
                    **options: bool) -> np.ndarray:
    """Float32 ``[n, 2]`` answer logits in input order, scored by every process of the group."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return scoring.score_ab_logits(model, processor, audios, prompt_cfg, batch_size, feature_device, **options)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    from accelerate import PartialState
    from accelerate.utils import gather_object

    with PartialState().split_between_processes(batches(audios, batch_size)) as share:
        mine = np.concatenate(share).astype(np.int64) if share else np.empty(0, dtype=np.int64)
    # Clips passed longest first: the scorer's own stable sort keeps them so, and forms the same batches.
    logits = scoring.score_ab_logits(model, processor, [audios[i] for i in mine], prompt_cfg, batch_size,
                                     feature_device, **options)
    out = np.full((len(audios), 2), np.nan, dtype=np.float32)
    for indices, part in gather_object([(mine, logits)]):
        out[indices] = part
    return out


def score_ab(model: nn.Module, processor: Any, audios: Sequence[np.ndarray], prompt_cfg: Mapping[str, Any] | None,
             batch_size: int, feature_device: str | None = None, **options: bool) -> np.ndarray:
    """P(speech) per clip, float64 ``[n]`` in input order (:func:`qvad.model.scoring.score_ab`'s result)."""
    logits = score_ab_logits(model, processor, audios, prompt_cfg, batch_size, feature_device,
                             **options).astype(np.float64)
    return expit(logits[:, 0] - logits[:, 1])
