"""OPRO prompt search: the A/B contract, the reward, determinism, both proposers and the final check."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path

import numpy as np
import pytest

from qvad.prompt_search import (
    LLM_DEFAULTS,
    DevSet,
    Proposal,
    ScoredPrompt,
    SearchParams,
    TemplateProposer,
    check_prompt,
    compute_reward,
    contract,
    search_prompt,
    stratified_subsample,
)
from qvad.prompt_search.llm import NO_OUTPUT, GenerationSettings, LLMProposer, build_meta_prompt, parse_reply
from qvad.prompt_search.search import DUPLICATE
from qvad.prompt_search.template import all_genomes, render
from tests.helpers import build_tiny_causal_lm

DEFAULT = "Choose one: A) SPEECH (human voice) B) NONSPEECH (music/noise/silence/animals). Answer with A or B ONLY."
PLANTED = "Is someone speaking in this recording?"
CONDITIONS = ("dur=20ms", "dur=200ms", "dur=1000ms", "snr=-10dB", "snr=0dB", "snr=10dB")
TEST_IDS = tuple(f"test-{i:03d}" for i in range(20))


@pytest.fixture
def dev() -> DevSet:
    """60 dev clips: 5 per (condition, label) cell."""
    cells = [(c, y) for c in CONDITIONS for y in (0, 1) for _ in range(5)]
    return DevSet.build([f"dev-{i:03d}" for i in range(len(cells))], [y for _, y in cells], [c for c, _ in cells])


def _uniform(*parts: str) -> float:
    """A deterministic U(0,1) from strings (Python's hash() is salted per process)."""
    return zlib.crc32("|".join(parts).encode()) / 2**32


class PlantedScorer:
    """Right on each clip with probability 1.0 if the prompt holds ``phrase``, else 0.6; records every id."""

    def __init__(self, dev: DevSet, phrase: str = PLANTED) -> None:
        self.label = dict(zip(dev.clip_ids, dev.labels.tolist()))
        self.phrase = phrase
        self.seen: set[str] = set()
        self.calls = 0

    def accuracy(self, prompt: str, clip_ids: Sequence[str]) -> float:
        return 1.0 if self.phrase in prompt else 0.6

    def __call__(self, prompt: str, clip_ids: Sequence[str]) -> np.ndarray:
        self.calls += 1
        self.seen.update(clip_ids)
        accuracy = self.accuracy(prompt, clip_ids)
        right = np.array([_uniform(prompt, clip) < accuracy for clip in clip_ids])
        truth = np.array([self.label[clip] for clip in clip_ids], dtype=bool)
        return np.where(right == truth, 0.9, 0.1)


# --- contract ---------------------------------------------------------------------------------


def test_contract_accepts_the_default_prompt() -> None:
    assert check_prompt(DEFAULT) == (True, contract.OK)


@pytest.mark.parametrize(
    ("prompt", "reason"),
    [
        (
            "Choose one: A) NONSPEECH (music/noise/silence/animals) B) SPEECH (human voice). Answer with A or B ONLY.",
            contract.A_NOT_SPEECH,
        ),
        ("Choose one: A) SPEECH (human voice). Answer with A ONLY.", contract.MISSING_B),
        ("<|AUDIO|> " + DEFAULT, contract.PLACEHOLDER),
        (DEFAULT.replace("Choose", "Ch\x0boose\ufffd"), contract.UNPRINTABLE),
        ("Is there speech? A) speech B) speech. Answer A or B.", contract.B_NOT_NONSPEECH),
        ("Choose one: A) SPEECH (human voice) B) NONSPEECH (music/noise/silence/animals).", contract.NO_INSTRUCTION),
        ("   ", contract.EMPTY),
        ("A) speech B) no", contract.TOO_SHORT),
        (DEFAULT + " " * 2 + "x" * contract.MAX_CHARS, contract.TOO_LONG),
    ],
)
def test_contract_rejects_broken_prompts(prompt: str, reason: str) -> None:
    assert check_prompt(prompt) == (False, reason)


def test_every_template_prompt_keeps_the_contract() -> None:
    """Every option combination (wordings x layout x instruction) with every question, each at least once."""
    genomes = all_genomes()
    assert render(genomes[0]) == DEFAULT
    n_questions = max(g[0] for g in genomes) + 1
    options = {g[1:] for g in genomes}
    sample = [(i % n_questions, *rest) for i, rest in enumerate(sorted(options))]
    assert {g[0] for g in sample} == set(range(n_questions))
    assert all(check_prompt(render(g))[0] for g in sample)


# --- reward and mini-dev ------------------------------------------------------------------------


def test_reward_is_clip_ba_plus_weighted_condition_ba() -> None:
    labels = [1, 1, 0, 0, 1, 0]
    p_speech = [0.9, 0.2, 0.1, 0.1, 0.8, 0.7]  # cell x: 3/4 right, one miss per class; cell y: all right
    conditions = ["x", "x", "x", "x", "y", "y"]
    reward = compute_reward(labels, p_speech, conditions, condition_weight=0.25)
    assert reward.balanced_accuracy == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert reward.condition_balanced_accuracy == pytest.approx((0.75 + 0.5) / 2)
    assert reward.value == pytest.approx(reward.balanced_accuracy + 0.25 * reward.condition_balanced_accuracy)


def test_minidev_is_stratified_and_seeded(dev: DevSet) -> None:
    first = stratified_subsample(dev, 20, np.random.default_rng(3))
    again = stratified_subsample(dev, 20, np.random.default_rng(3))
    other = stratified_subsample(dev, 20, np.random.default_rng(4))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert len(set(first.tolist())) == 20 and np.bincount(dev.labels[first]).tolist() == [10, 10]
    assert {dev.conditions[i] for i in first} == set(CONDITIONS)
    assert len(stratified_subsample(dev, None, np.random.default_rng(0))) == len(dev)


# --- search with the template proposer -------------------------------------------------------


def test_same_seed_gives_the_same_result(dev: DevSet) -> None:
    params = SearchParams(iterations=2, seed=11)
    first = search_prompt(dev, PlantedScorer(dev), TemplateProposer(), DEFAULT, params)
    again = search_prompt(dev, PlantedScorer(dev), TemplateProposer(), DEFAULT, params)
    other = search_prompt(dev, PlantedScorer(dev), TemplateProposer(), DEFAULT, SearchParams(iterations=1, seed=12))
    assert first.summary() == again.summary()
    assert first.history_records() == again.history_records()
    assert [r["prompt"] for r in first.history_records()[:8]] != [r["prompt"] for r in other.history_records()]


def test_template_search_finds_the_planted_prompt_and_only_scores_dev_clips(dev: DevSet) -> None:
    scorer = PlantedScorer(dev)
    result = search_prompt(dev, scorer, TemplateProposer(), DEFAULT, SearchParams(seed=0))
    assert PLANTED in result.chosen_prompt and not result.kept_training_prompt
    assert result.winner_dev.value == pytest.approx(1.25) and result.winner_dev.value > result.training_dev.value
    assert check_prompt(result.chosen_prompt)[0]
    assert scorer.seen <= set(dev.clip_ids) and not scorer.seen & set(TEST_IDS)
    scored = [row for row in result.history if row.source == "template"]
    assert len({row.prompt for row in scored}) == len(scored) == result.n_scored  # no duplicates proposed
    assert all(row.n_clips == 20 for row in result.history)  # every iteration on a 20-clip mini-dev
    assert result.stopped_early and result.stop_reason == "patience"  # the planted prompt cannot be beaten


# --- the final full-dev check and the loop's bookkeeping -------------------------------------


class ScriptedProposer:
    """Proposes a repeat, a swapped-meaning prompt and one new valid prompt per iteration."""

    name = "scripted"

    def propose(
        self, memory: Sequence[ScoredPrompt], n: int, exclude: AbstractSet[str], rng: np.random.Generator
    ) -> list[Proposal]:
        fresh = f"Is there human speech in clip set {len(exclude)}? A) speech B) no speech. Answer A or B."
        swapped = "Is there speech? A) no speech B) speech. Answer A or B."
        return [Proposal(DEFAULT), Proposal(swapped), Proposal(fresh), Proposal("", NO_OUTPUT)][:n]


def test_training_prompt_is_kept_when_the_winner_fails_on_full_dev(dev: DevSet) -> None:
    class MiniDevOverfit(PlantedScorer):
        """New prompts are perfect on any mini-dev and poor on the full dev set."""

        def accuracy(self, prompt: str, clip_ids: Sequence[str]) -> float:
            if prompt == DEFAULT:
                return 0.8
            return 1.0 if len(clip_ids) < len(dev) else 0.5

    params = SearchParams(iterations=3, proposals_per_iteration=4, seed=5)
    result = search_prompt(dev, MiniDevOverfit(dev), ScriptedProposer(), DEFAULT, params)
    assert result.winner_prompt != DEFAULT
    assert result.kept_training_prompt and result.chosen_prompt == DEFAULT
    assert result.winner_dev.value < result.training_dev.value
    assert "kept the training prompt" in result.decision
    assert result.rejected == {contract.A_NOT_SPEECH: 1, DUPLICATE: 5, NO_OUTPUT: 3}
    assert result.n_scored == 3 and result.iterations_run == 3 and not result.stopped_early


def test_search_stops_after_patience_without_gain(dev: DevSet) -> None:
    params = SearchParams(iterations=10, proposals_per_iteration=3, patience=2, minidev_size=None)
    scorer = PlantedScorer(dev, phrase="Choose one:")  # the training prompt is already the best
    result = search_prompt(dev, scorer, ScriptedProposer(), DEFAULT, params)
    assert result.stopped_early and result.stop_reason == "patience" and result.iterations_run == 2
    assert result.kept_training_prompt and "no candidate displaced it" in result.decision


# --- the llm proposer ----------------------------------------------------------------------------


def test_parse_reply_handles_tags_lists_quotes_and_junk() -> None:
    tagged = "Sure!\n<prompt>Is anyone talking? A) speech B) no speech. Answer A or B.</prompt>\n<prompt> second "
    assert [p.text for p in parse_reply(tagged, 2)] == [
        "Is anyone talking? A) speech B) no speech. Answer A or B.",
        "second",
    ]
    numbered = 'Here you go:\n1. "First prompt,\ncontinued"\n2) Prompt 2: \u201cSecond\u201d\n3.   \n'
    assert parse_reply(numbered, 3) == [
        Proposal("First prompt, continued"),
        Proposal("Second"),
        Proposal("", NO_OUTPUT),
    ]
    assert parse_reply("\n\n", 2) == [Proposal("", NO_OUTPUT)] * 2
    junk = parse_reply("\x0b@@ ## zz\n\nqq", 3)
    assert [p.text for p in junk[:2]] == ["@@ ## zz", "qq"] and not any(check_prompt(p.text)[0] for p in junk)


def test_meta_prompt_lists_scores_worst_first_and_the_axes() -> None:
    memory = [ScoredPrompt("best prompt", 1.2), ScoredPrompt("worse prompt", 0.9)]
    text = build_meta_prompt(memory, 3, {"duration_ms": [20, 1000], "snr_db": [-10, 10]})
    assert text.index("worse prompt") < text.index("best prompt")
    assert "score: 1.200" in text and "duration_ms: 20, 1000" in text and "snr_db: -10, 10" in text
    assert "Write 3 new prompts" in text


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"))


def test_llm_proposer_runs_end_to_end_on_a_tiny_random_lm(dev: DevSet, tiny_lm_dir: Path) -> None:
    axes = {"duration_ms": [20, 200, 1000], "snr_db": [-10, 0, 10]}
    proposer = LLMProposer.from_pretrained(
        tiny_lm_dir, axes, GenerationSettings(max_new_tokens=40), local_files_only=True
    )
    memory = [ScoredPrompt(DEFAULT, 1.0)]
    first = proposer.propose(memory, 3, frozenset(), np.random.default_rng(0))
    assert first == proposer.propose(memory, 3, frozenset(), np.random.default_rng(0))  # seeded sampling

    params = SearchParams.from_mapping({"iterations": 2, "seed": 1}, base=LLM_DEFAULTS)
    scorer = PlantedScorer(dev)
    result = search_prompt(dev, scorer, proposer, DEFAULT, params)
    assert result.chosen_prompt == DEFAULT and result.kept_training_prompt
    proposed = [row for row in result.history if row.source == "llm"]
    assert len(proposed) == 2 * 3 and sum(result.rejected.values()) == 6 and result.n_scored == 0
    assert all(not row.accepted and row.reason for row in proposed)
    assert set(result.rejected) <= {NO_OUTPUT, DUPLICATE} | {
        getattr(contract, name) for name in dir(contract) if name.isupper() and isinstance(getattr(contract, name), str)
    }
    assert scorer.seen <= set(dev.clip_ids)


def test_dev_scorer_varies_only_the_user_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """Candidates are scored in the layout and system turn the adapter was trained with."""
    from types import SimpleNamespace

    import pandas as pd

    from qvad.prompt_search import optimize_prompt as stage

    seen = []
    monkeypatch.setattr(stage, "score_ab", lambda model, processor, clips, prompt, batch: seen.append(prompt) or [0.5])
    dev = SimpleNamespace(frame=pd.DataFrame({"clip_id": ["c1"]}), audio=[np.zeros(160, np.float32)])
    base = {"system": "sys", "user": "train question", "audio_position": "after_question"}
    stage.DevScorer(None, None, dev, base, 4)("new question", ["c1"])
    assert seen == [{"system": "sys", "user": "new question", "audio_position": "after_question"}]
