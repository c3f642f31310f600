"""What the search and its proposers exchange, so any proposer (template, LLM, ...) plugs in.

The search owns scoring, the contract check and the memory; a proposer only turns the memory
into new prompt texts. Keeping that boundary narrow is what lets the offline template proposer
and a real LLM be swapped by a parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class ScoredPrompt:
    """A prompt in the search's memory with its mean reward over the evaluations so far."""

    text: str
    reward: float


@dataclass(frozen=True)
class Proposal:
    """One proposed prompt; ``reason`` is set when the proposer already knows it is unusable.

    A proposer reports its failures (an unparseable LLM output, a missing item) as proposals
    with a reason instead of dropping them, so every requested candidate is accounted for.
    """

    text: str
    reason: str | None = None


class Proposer(Protocol):
    """Turns the best prompts so far into ``n`` new candidates."""

    name: str

    def propose(
        self, memory: Sequence[ScoredPrompt], n: int, exclude: AbstractSet[str], rng: np.random.Generator
    ) -> list[Proposal]:
        """Return up to ``n`` proposals; ``memory`` is best-first, ``exclude`` holds every text already tried.

        An empty list means the proposer has nothing new left, which ends the search.
        """
        ...
