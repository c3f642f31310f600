"""The OPRO loop: propose, check, score on a mini-dev, keep the best; confirm on the full dev set.

Each iteration re-scores the best prompt so far (the incumbent) on that iteration's mini-dev
and asks the proposer for new candidates; one replaces the incumbent only by beating it on
the same clips. A small, resampled mini-dev is cheap but noisy, so the winner must finally
beat the training prompt on the whole dev set, otherwise the training prompt is kept: a
search should never ship a prompt that is worse than what the model was trained with.
Scoring is a callback, so this module never knows about models, audio or devices.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Protocol

import numpy as np

from qvad.prompt_search.contract import check_prompt
from qvad.prompt_search.devset import DevSet, stratified_subsample
from qvad.prompt_search.proposer import Proposal, Proposer, ScoredPrompt
from qvad.prompt_search.reward import DEFAULT_CONDITION_WEIGHT, Reward, compute_reward

DUPLICATE = "duplicate"
"""Rejection reason for a text already tried in this search (scoring it again would waste a pass)."""

_MINIDEV_STREAM = 1
_PROPOSER_STREAM = 2
"""Separate seeded streams, so changing the proposer never changes which clips are drawn."""


class Scorer(Protocol):
    """Scores one user prompt on some clips: P(speech) per clip, in ``clip_ids`` order."""

    def __call__(self, user_prompt: str, clip_ids: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class SearchParams:
    """Loop settings; the defaults are the study's OPRO-Template run (best + 7 new, 20-clip mini-dev)."""

    iterations: int = 15
    proposals_per_iteration: int = 7
    top_k: int = 10
    patience: int = 5
    condition_weight: float = DEFAULT_CONDITION_WEIGHT
    minidev_size: int | None = 20
    resample_minidev: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("iterations", "proposals_per_iteration", "top_k", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"prompt search: {name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None, base: SearchParams | None = None) -> SearchParams:
        """``base`` (default: template defaults) overridden by ``cfg``; unknown keys are an error, not ignored."""
        cfg = dict(cfg or {})
        unknown = set(cfg) - {f.name for f in fields(cls)}
        if unknown:
            raise KeyError(f"unknown prompt search params {sorted(unknown)}")
        return replace(base or cls(), **cfg)


TEMPLATE_DEFAULTS = SearchParams()
LLM_DEFAULTS = SearchParams(iterations=30, proposals_per_iteration=3, minidev_size=None, resample_minidev=False)
"""The study's OPRO-LLM run: best + 3 new prompts an iteration, up to 30 iterations, scored on the full dev set."""


@dataclass(frozen=True)
class HistoryRow:
    """One candidate in one iteration; ``reward`` and ``balanced_accuracy`` are None when it was rejected."""

    iteration: int
    candidate: int
    source: str
    prompt: str
    accepted: bool
    reason: str
    reward: float | None
    balanced_accuracy: float | None
    n_clips: int


@dataclass(frozen=True)
class SearchResult:
    """What the search decided and why, with everything needed to audit it."""

    chosen_prompt: str
    training_prompt: str
    winner_prompt: str
    kept_training_prompt: bool
    decision: str
    training_dev: Reward
    winner_dev: Reward
    history: tuple[HistoryRow, ...]
    n_scored: int
    rejected: dict[str, int]
    iterations_run: int
    stopped_early: bool
    stop_reason: str

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (history left out: write it with :meth:`history_records`)."""
        summary = asdict(self)
        del summary["history"]
        return summary

    def history_records(self) -> list[dict[str, Any]]:
        """History rows as plain dicts, e.g. for a CSV or a DVC plot."""
        return [asdict(row) for row in self.history]


class _Evaluator:
    """Scores prompts on index subsets of the dev set, each (prompt, subset) at most once."""

    def __init__(self, dev: DevSet, scorer: Scorer, condition_weight: float) -> None:
        self._dev = dev
        self._scorer = scorer
        self._weight = condition_weight
        self._cache: dict[tuple[str, bytes], Reward] = {}

    def __call__(self, prompt: str, indices: np.ndarray) -> Reward:
        key = (prompt, indices.tobytes())
        if key not in self._cache:
            clips = self._dev.subset(indices)
            p_speech = _checked_scores(self._scorer(prompt, list(clips.clip_ids)), len(clips))
            self._cache[key] = compute_reward(clips.labels, p_speech, clips.conditions, self._weight)
        return self._cache[key]


def _checked_scores(raw: Any, n: int) -> np.ndarray:
    """The scorer's output as a float array, refusing anything that could not be P(speech) per clip."""
    scores = np.asarray(raw, dtype=float)
    if scores.shape != (n,):
        raise ValueError(f"scorer returned shape {scores.shape}, expected ({n},)")
    if not np.all(np.isfinite(scores)) or scores.min() < 0.0 or scores.max() > 1.0:
        raise ValueError("scorer must return finite probabilities in [0, 1]")
    return scores


class _Memory:
    """Mean reward of every prompt scored so far, in first-seen order; the proposer sees the top k."""

    def __init__(self) -> None:
        self._rewards: dict[str, list[float]] = {}

    def add(self, prompt: str, reward: float) -> None:
        self._rewards.setdefault(prompt, []).append(reward)

    def top(self, k: int) -> list[ScoredPrompt]:
        """Best first; ties keep first-seen order (a stable sort), so the view is deterministic."""
        scored = [ScoredPrompt(text, float(np.mean(values))) for text, values in self._rewards.items()]
        return sorted(scored, key=lambda item: -item.reward)[:k]


def _minidev_indices(dev: DevSet, params: SearchParams, iteration: int) -> np.ndarray:
    """This iteration's clips: a fresh draw per iteration when resampling, else the iteration-0 draw."""
    draw = iteration if params.resample_minidev else 0
    return stratified_subsample(dev, params.minidev_size, np.random.default_rng((params.seed, _MINIDEV_STREAM, draw)))


def _rejection(proposal: Proposal, tried: set[str]) -> str | None:
    """Why a proposal cannot be scored (the proposer's own reason, a repeat, a contract breach), or None."""
    if proposal.reason is not None:
        return proposal.reason
    if proposal.text in tried:
        return DUPLICATE
    ok, reason = check_prompt(proposal.text)
    return None if ok else reason


def _row(iteration: int, candidate: int, source: str, prompt: str, reason: str, reward: Reward | None) -> HistoryRow:
    return HistoryRow(
        iteration=iteration,
        candidate=candidate,
        source=source,
        prompt=prompt,
        accepted=reward is not None,
        reason=reason,
        reward=None if reward is None else reward.value,
        balanced_accuracy=None if reward is None else reward.balanced_accuracy,
        n_clips=0 if reward is None else reward.n_clips,
    )


def _decide(training_prompt: str, winner: str, training_dev: Reward, winner_dev: Reward) -> tuple[str, bool, str]:
    """``(chosen, kept_training, sentence)``: the winner only if it beats the training prompt on the full dev set."""
    if winner == training_prompt:
        return training_prompt, True, "kept the training prompt: no candidate displaced it during the search"
    rewards = f"full-dev reward {winner_dev.value:.4f} vs the training prompt's {training_dev.value:.4f}"
    if winner_dev.value > training_dev.value:
        return winner, False, f"chose the search winner: {rewards}"
    return training_prompt, True, f"kept the training prompt: the search winner does not beat it ({rewards})"


@dataclass
class _Progress:
    """What the loop accumulates: every text tried, the audit rows and the counts."""

    tried: set[str]
    memory: _Memory = field(default_factory=_Memory)
    history: list[HistoryRow] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    n_scored: int = 0


def _iterate(
    iteration: int,
    incumbent: str,
    proposals: Sequence[Proposal],
    indices: np.ndarray,
    evaluate: _Evaluator,
    source: str,
    progress: _Progress,
) -> str:
    """Check and score one iteration's proposals; return the new incumbent (the old one unless beaten).

    The incumbent is scored on the same clips as the candidates, so on a resampled mini-dev a
    candidate must win on this iteration's clips, not against an old, luckier draw.
    """
    best, best_reward = incumbent, evaluate(incumbent, indices)
    progress.history.append(_row(iteration, 0, "incumbent", incumbent, "incumbent", best_reward))
    for candidate, proposal in enumerate(proposals, start=1):
        why = _rejection(proposal, progress.tried)
        if proposal.text:
            progress.tried.add(proposal.text)
        if why is not None:
            progress.rejected[why] += 1
            progress.history.append(_row(iteration, candidate, source, proposal.text, why, None))
            continue
        reward = evaluate(proposal.text, indices)
        progress.n_scored += 1
        progress.memory.add(proposal.text, reward.value)
        progress.history.append(_row(iteration, candidate, source, proposal.text, "scored", reward))
        if reward.value > best_reward.value:
            best, best_reward = proposal.text, reward
    return best


def search_prompt(
    dev: DevSet, scorer: Scorer, proposer: Proposer, training_prompt: str, params: SearchParams = TEMPLATE_DEFAULTS
) -> SearchResult:
    """Run OPRO from ``training_prompt`` and return the confirmed choice; the same inputs give the same result.

    The scorer is only ever called with clip ids of ``dev``.
    """
    ok, reason = check_prompt(training_prompt)
    if not ok:
        raise ValueError(f"the training prompt breaks the A/B contract ({reason}): {training_prompt!r}")
    evaluate = _Evaluator(dev, scorer, params.condition_weight)
    progress = _Progress(tried={training_prompt})
    incumbent, stale, iterations_run, stop_reason = training_prompt, 0, 0, "completed"
    for iteration in range(1, params.iterations + 1):
        indices = _minidev_indices(dev, params, iteration)
        progress.memory.add(incumbent, evaluate(incumbent, indices).value)
        rng = np.random.default_rng((params.seed, _PROPOSER_STREAM, iteration))
        memory = progress.memory.top(params.top_k)
        proposals = proposer.propose(memory, params.proposals_per_iteration, frozenset(progress.tried), rng)
        if not proposals:
            stop_reason = "proposer_exhausted"
            break
        iterations_run = iteration
        best = _iterate(iteration, incumbent, proposals, indices, evaluate, proposer.name, progress)
        stale = 0 if best != incumbent else stale + 1
        incumbent = best
        if stale >= params.patience and iteration < params.iterations:
            stop_reason = "patience"
            break
    everything = np.arange(len(dev))
    training_dev, winner_dev = evaluate(training_prompt, everything), evaluate(incumbent, everything)
    chosen, kept, decision = _decide(training_prompt, incumbent, training_dev, winner_dev)
    return SearchResult(
        chosen_prompt=chosen,
        training_prompt=training_prompt,
        winner_prompt=incumbent,
        kept_training_prompt=kept,
        decision=decision,
        training_dev=training_dev,
        winner_dev=winner_dev,
        history=tuple(progress.history),
        n_scored=progress.n_scored,
        rejected=dict(sorted(progress.rejected.items())),
        iterations_run=iterations_run,
        stopped_early=stop_reason != "completed",
        stop_reason=stop_reason,
    )
