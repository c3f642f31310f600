"""OPRO-style search for the A/B user prompt, independent of how clips are scored.

A stage supplies the dev clips (ids, labels, condition cells), a scoring callback and a
proposer; :func:`search_prompt` returns the prompt to use and the evidence for it. The
pieces: ``contract`` (what a valid prompt is), ``reward`` (what "better" means), ``devset``
(which clips may be scored, and the mini-dev), ``template`` and ``llm`` (where candidates
come from) and ``search`` (the loop and the final full-dev confirmation).
``llm`` is not re-exported: importing it loads torch and transformers, which the template
path never needs; import ``qvad.prompt_search.llm`` where the LLM proposer is wanted.
"""

from qvad.prompt_search.contract import check_prompt
from qvad.prompt_search.devset import DevSet, stratified_subsample
from qvad.prompt_search.proposer import Proposal, Proposer, ScoredPrompt
from qvad.prompt_search.reward import Reward, compute_reward
from qvad.prompt_search.search import (
    LLM_DEFAULTS,
    TEMPLATE_DEFAULTS,
    HistoryRow,
    Scorer,
    SearchParams,
    SearchResult,
    search_prompt,
)
from qvad.prompt_search.template import TemplateProposer

__all__ = [
    "LLM_DEFAULTS",
    "TEMPLATE_DEFAULTS",
    "DevSet",
    "HistoryRow",
    "Proposal",
    "Proposer",
    "Reward",
    "ScoredPrompt",
    "Scorer",
    "SearchParams",
    "SearchResult",
    "TemplateProposer",
    "check_prompt",
    "compute_reward",
    "search_prompt",
    "stratified_subsample",
]
