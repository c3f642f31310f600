"""The offline ``template`` proposer: recombines a fixed library of prompt parts.

The study's best system used no LLM: each iteration it kept the best prompt so far and tried
7 more built from ~15 hand-written templates. Here a prompt is a genome of five parts
(question, speech wording, non-speech wording, option layout, answer instruction); new
candidates mutate or cross the best genomes, or are drawn fresh, from a seeded Generator.
Every layout keeps A = speech and B = non-speech (some list B first, but the letters keep
their meaning), so every rendered prompt passes the contract by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import numpy as np

from qvad.prompt_search.proposer import Proposal, ScoredPrompt

QUESTIONS: tuple[str, ...] = (
    "Choose one:",
    "Is there human speech in this clip?",
    "Does this audio contain human speech?",
    "Is someone speaking in this recording?",
    "Listen carefully. Is a human voice speaking in this audio?",
    "Do you hear a person talking, even briefly or faintly?",
    "Classify this audio clip.",
    "Does this sound contain spoken words from a person?",
    "The clip may be very short or noisy. Is there any human speech in it?",
    "Decide whether the audio contains speech.",
    "Is any part of this clip a human speaking?",
    "Focus on the human voice. Is speech present in this clip?",
    "What best describes this audio?",
    "Detect speech: is a person talking in this clip?",
    "Even if it is quiet or masked by noise, can you hear someone speak?",
)
SPEECH_WORDINGS: tuple[str, ...] = (
    "SPEECH (human voice)",
    "speech",
    "human speech is present",
    "yes, a person is speaking",
    "SPEECH (someone talking, even briefly)",
)
NONSPEECH_WORDINGS: tuple[str, ...] = (
    "NONSPEECH (music/noise/silence/animals)",
    "no speech",
    "no human speech (music, noise, silence or animals)",
    "no, nobody is speaking",
    "NON-SPEECH (only music, noise or silence)",
)
LAYOUTS: tuple[str, ...] = (
    "A) {speech} B) {nonspeech}.",
    "B) {nonspeech} A) {speech}.",
    "'A' for {speech}, 'B' for {nonspeech}.",
    "A = {speech}; B = {nonspeech}.",
    "A: {speech}. B: {nonspeech}.",
    "Options: (B) {nonspeech}, (A) {speech}.",
)
INSTRUCTIONS: tuple[str, ...] = (
    "Answer with A or B ONLY.",
    "Reply with a single letter: A or B.",
    "Respond with only A or B.",
    "Output just the letter A or B.",
    "Answer A or B.",
)
PARTS: tuple[tuple[str, ...], ...] = (QUESTIONS, SPEECH_WORDINGS, NONSPEECH_WORDINGS, LAYOUTS, INSTRUCTIONS)
"""The genome's parts, in order; (0, 0, 0, 0, 0) renders the project's default prompt exactly."""

Genome = tuple[int, ...]


def render(genome: Genome) -> str:
    """The prompt text a genome stands for."""
    question, speech, nonspeech, layout, instruction = (part[i] for part, i in zip(PARTS, genome))
    options = layout.format(speech=speech, nonspeech=nonspeech)
    return f"{question} {options} {instruction}"


def all_genomes() -> list[Genome]:
    """Every genome in the library (about 11k): cheap to list, so texts can be mapped back to genomes."""
    grids = np.meshgrid(*(np.arange(len(part)) for part in PARTS), indexing="ij")
    return [tuple(int(v) for v in row) for row in np.stack([g.ravel() for g in grids], axis=1)]


@dataclass(frozen=True)
class OperatorWeights:
    """How often a new candidate is a one-part mutation, a crossover of two parents, or fresh.

    Mostly mutation: OPRO's gains come from small edits of what already works; some fresh
    draws keep the search from circling one neighbourhood.
    """

    mutate: float = 0.6
    crossover: float = 0.2
    fresh: float = 0.2


class TemplateProposer:
    """Proposes unseen library prompts near the best ones in memory."""

    name = "template"

    def __init__(self, weights: OperatorWeights = OperatorWeights(), max_draws_per_candidate: int = 200) -> None:
        total = weights.mutate + weights.crossover + weights.fresh
        self._operator_p = np.array([weights.mutate, weights.crossover, weights.fresh]) / total
        self._max_draws = max_draws_per_candidate
        self._genome_of = {render(g): g for g in all_genomes()}

    def propose(
        self, memory: Sequence[ScoredPrompt], n: int, exclude: AbstractSet[str], rng: np.random.Generator
    ) -> list[Proposal]:
        """Up to ``n`` distinct library prompts not in ``exclude``; fewer only when draws run dry.

        Parents are memory prompts the library can express (a hand-written training prompt
        outside the library can still be beaten, just not mutated).
        """
        parents = [self._genome_of[item.text] for item in memory if item.text in self._genome_of]
        taken = set(exclude)
        proposals: list[Proposal] = []
        for _ in range(n * self._max_draws):
            if len(proposals) == n:
                break
            text = render(self._draw(parents, rng))
            if text not in taken:
                taken.add(text)
                proposals.append(Proposal(text))
        return proposals

    def _draw(self, parents: Sequence[Genome], rng: np.random.Generator) -> Genome:
        """One genome from a mutation, a crossover or a fresh draw.

        Without parents every draw is fresh; a crossover drawn with a single parent falls back to fresh too.
        """
        operator = int(rng.choice(3, p=self._operator_p)) if parents else 2
        if operator == 0:
            return _mutate(parents[_rank_pick(len(parents), rng)], rng)
        if operator == 1 and len(parents) > 1:
            first, second = rng.choice(len(parents), size=2, replace=False)
            return _crossover(parents[int(first)], parents[int(second)], rng)
        return tuple(int(rng.integers(len(part))) for part in PARTS)


def _rank_pick(n: int, rng: np.random.Generator) -> int:
    """Index into a best-first list, favouring the top: weight 1/(rank+1)."""
    weights = 1.0 / np.arange(1, n + 1)
    return int(rng.choice(n, p=weights / weights.sum()))


def _mutate(genome: Genome, rng: np.random.Generator) -> Genome:
    """Replace one part with a different option of that part."""
    slot = int(rng.integers(len(PARTS)))
    options = [i for i in range(len(PARTS[slot])) if i != genome[slot]]
    mutated = list(genome)
    mutated[slot] = int(rng.choice(options))
    return tuple(mutated)


def _crossover(first: Genome, second: Genome, rng: np.random.Generator) -> Genome:
    """Take each part from one parent or the other at random."""
    return tuple(a if rng.random() < 0.5 else b for a, b in zip(first, second))
