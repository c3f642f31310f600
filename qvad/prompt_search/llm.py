"""The ``llm`` proposer: a local causal LM writes new prompts from the best ones so far (OPRO).

The study used Qwen2.5-7B-Instruct; any causal LM on disk or in the hub cache works, loaded
with AutoModelForCausalLM / AutoTokenizer. The meta-prompt lists the top prompts with their
scores (ascending, so the best sits next to the request, as in OPRO) and the degradation
axes the prompt must survive. LLM output is untrusted text: the parser accepts tagged,
numbered, bulleted or quoted answers, and everything it cannot use comes back as a proposal
with a reason, so a weak or random model costs candidates but never breaks the search.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from qvad.prompt_search.contract import MAX_CHARS
from qvad.prompt_search.proposer import Proposal, ScoredPrompt

NO_OUTPUT = "llm_no_output"
"""The reply held fewer usable items than requested; one proposal per missing item."""

_TAGGED = re.compile(r"<prompt>(.*?)(?:</prompt>|(?=<prompt>)|$)", re.IGNORECASE | re.DOTALL)
_ITEM_START = re.compile(r"^\s*(?:\d{1,2}\s*[.):\]]|[-*\u2022]|(?:prompt|candidate)\s*\d*\s*:)\s*", re.IGNORECASE)
_LABEL = re.compile(r"^(?:new\s+)?(?:prompt|candidate|instruction)\s*\d*\s*:\s*", re.IGNORECASE)
_QUOTES = "\"'`\u201c\u201d\u2018\u2019"


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings; sampling (not greedy) so repeated iterations give different prompts."""

    max_new_tokens: int = 384
    temperature: float = 1.0
    top_p: float = 0.95


def load_causal_lm(
    name_or_path: str | Path, local_files_only: bool = True, device: str = "cpu", dtype: torch.dtype | None = None
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a local directory or hub id, in eval mode on ``device``.

    ``local_files_only`` defaults to True because the pipeline machines are offline: a missing
    model should fail at once, not after network time-outs.
    """
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), local_files_only=local_files_only)
    model = AutoModelForCausalLM.from_pretrained(str(name_or_path), local_files_only=local_files_only, dtype=dtype)
    return model.to(device).eval(), tokenizer


def describe_axes(axes: Mapping[str, Sequence[object]]) -> str:
    """One line per degradation axis, e.g. 'duration_ms: 20, 40, 1000'."""
    return "\n".join(f"- {name}: {', '.join(str(v) for v in values)}" for name, values in axes.items())


def build_meta_prompt(memory: Sequence[ScoredPrompt], n: int, axes: Mapping[str, Sequence[object]]) -> str:
    """The request to the LLM: task, conditions, scored prompts (worst to best), rules and format."""
    scored = "\n".join(f"<prompt>{item.text}</prompt>\nscore: {item.reward:.3f}" for item in reversed(memory))
    return (
        "You are optimising the text prompt of an audio-language model that hears one audio clip and must say "
        "whether it contains human speech.\n"
        f"The clips are degraded along these axes:\n{describe_axes(axes)}\n"
        "Below are previous prompts with their scores (balanced accuracy plus a bonus for every condition), "
        "from worst to best:\n"
        f"{scored}\n"
        f"Write {n} new prompts that are different from all of the above and would score higher.\n"
        "Rules: option A must mean speech and option B must mean non-speech, written out as options "
        "(for example 'A) speech B) no speech'); the prompt must tell the model to answer with the single letter "
        f"A or B; do not mention audio tokens; at most {MAX_CHARS} characters.\n"
        f"Put each prompt inside <prompt></prompt> tags and write nothing else."
    )


def _clean(item: str) -> str:
    """Strip list markers, 'Prompt:' labels, surrounding quotes and extra whitespace."""
    text = " ".join(_ITEM_START.sub("", item.strip(), count=1).split())
    text = _LABEL.sub("", text)
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


def _split_items(reply: str) -> list[str]:
    """Raw items: <prompt> tags if any, else list items (with continuation lines), else paragraphs."""
    tagged = _TAGGED.findall(reply)
    if tagged:
        return tagged
    lines = reply.splitlines()
    if any(_ITEM_START.match(line) for line in lines):
        items: list[str] = []
        for line in lines:
            if _ITEM_START.match(line):
                items.append(line)
            elif items and line.strip():
                items[-1] += " " + line
        return items
    return re.split(r"\n\s*\n", reply)


def parse_reply(reply: str, n: int) -> list[Proposal]:
    """Exactly ``n`` proposals from an LLM reply: the first ``n`` non-empty items, padded with NO_OUTPUT.

    Items past the ``n`` asked for are dropped, so a chatty model cannot take over the budget.
    Items are not judged here beyond emptiness: the contract check, applied by the search to
    every proposal, is the one place that decides what a valid prompt is.
    """
    texts = [text for text in (_clean(item) for item in _split_items(reply)) if text][:n]
    return [Proposal(text) for text in texts] + [Proposal("", NO_OUTPUT)] * (n - len(texts))


class LLMProposer:
    """Asks a causal LM for ``n`` prompts per call, with a sampling seed drawn from the search's Generator."""

    name = "llm"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        axes: Mapping[str, Sequence[object]],
        generation: GenerationSettings = GenerationSettings(),
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._axes = dict(axes)
        self._generation = generation

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        axes: Mapping[str, Sequence[object]],
        generation: GenerationSettings = GenerationSettings(),
        local_files_only: bool = True,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
    ) -> LLMProposer:
        """Load the LM with :func:`load_causal_lm` and wrap it."""
        model, tokenizer = load_causal_lm(name_or_path, local_files_only=local_files_only, device=device, dtype=dtype)
        return cls(model, tokenizer, axes, generation)

    def propose(
        self, memory: Sequence[ScoredPrompt], n: int, exclude: AbstractSet[str], rng: np.random.Generator
    ) -> list[Proposal]:
        """``n`` proposals parsed from one sampled reply; ``exclude`` is left to the search's duplicate check.

        The LLM cannot be forced to avoid old prompts, so repeats come back and are counted
        as duplicates by the search rather than silently re-asked for.
        """
        reply = self.generate(build_meta_prompt(memory, n, self._axes), seed=int(rng.integers(2**31 - 1)))
        return parse_reply(reply, n)

    def generate(self, request: str, seed: int) -> str:
        """Sample a reply to ``request``; the seed fixes it without touching the caller's global RNG."""
        text, add_special_tokens = self._render(request)
        inputs = self._tokenizer(text, return_tensors="pt", add_special_tokens=add_special_tokens).to(
            self._model.device
        )
        pad_id = (
            self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else self._tokenizer.eos_token_id
        )
        devices = [self._model.device] if self._model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed)
            output = self._model.generate(
                **inputs,
                do_sample=True,
                temperature=self._generation.temperature,
                top_p=self._generation.top_p,
                max_new_tokens=self._generation.max_new_tokens,
                pad_token_id=pad_id,
            )
        return self._tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    def _render(self, request: str) -> tuple[str, bool]:
        """``(text, add_special_tokens)``: the chat format when the LM has one (instruct models), else plain.

        A rendered chat template already holds its special tokens; letting the tokenizer add a
        BOS again would give the model a sequence it never saw in training.
        """
        if getattr(self._tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": request}]
            return self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), False
        return request + "\n", True
