"""Prompt proposals made once, by rank 0, and sent to every process of a scoring group.

In a group each process runs the prompt search in step (the dev rewards it reads are gathered,
so every process takes the same decisions), but the proposals must be the same text everywhere:
an LLM proposer samples, and two GPUs need not sample alike, and it would load its model once per
process. Rank 0 alone holds the real proposer; the others receive its proposals. The proposer's
``rng`` is made afresh for each iteration by the search, so nothing else drifts between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet

import numpy as np
import torch.distributed as dist

from qvad.prompt_search.proposer import Proposal, Proposer, ScoredPrompt


class SharedProposer:
    """A :class:`~qvad.prompt_search.proposer.Proposer` whose proposals come from rank 0's ``proposer``
    (None on the other ranks)."""

    def __init__(self, proposer: Proposer | None) -> None:
        self.proposer = proposer
        box = [proposer.name if proposer is not None else None]
        dist.broadcast_object_list(box, src=0)
        self.name: str = box[0]

    def propose(self, memory: Sequence[ScoredPrompt], n: int, exclude: AbstractSet[str],
                rng: np.random.Generator) -> list[Proposal]:
        made = self.proposer.propose(memory, n, exclude, rng) if self.proposer is not None else None
        box = [made]
        dist.broadcast_object_list(box, src=0)
        return box[0]
