"""The optimize_prompt stage: OPRO search of the user prompt for the trained model, on dev only.

It scores candidate prompts with the same exact A/B scorer evaluate uses, on dev clips only
(test is never read: the stage does not depend on data/splits/test.csv). The chosen prompt is
written to models/prompt.json, which evaluate, psychometric and ``qvad predict`` read; it is
the training prompt unless a candidate beat it on the full dev set.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from qvad.common.atomic import write_csv, write_json
from qvad.common.cpu_numerics import pin_cpu_numerics
from qvad.common.params import choice, get, require
from qvad.model.dataset import ClipDataset
from qvad.model import accel
from qvad.parallel.group import join_group
from qvad.parallel.proposer import SharedProposer
from qvad.parallel.scoring import score_ab
from qvad.model.store import ADAPTER, PROMPT, device, load_trained
from qvad.prompt_search.devset import DevSet
from qvad.prompt_search.proposer import Proposer
from qvad.prompt_search.search import LLM_DEFAULTS, TEMPLATE_DEFAULTS, SearchParams, search_prompt
from qvad.prompt_search.template import TemplateProposer

DEV = Path("data/splits/dev.csv")
TIMING = Path("logs/optimize_prompt_timing.json")
PROPOSERS = ("template", "llm", "none")
SEARCH_KEYS = ("iterations", "proposals_per_iteration", "top_k", "patience", "condition_weight", "minidev_size",
               "resample_minidev")


class DevScorer:
    """Scores a user prompt on dev clips by id with the A/B scorer; nothing but dev is loaded."""

    def __init__(self, model: Any, processor: Any, dev: ClipDataset, base_prompt: dict, batch_size: int) -> None:
        """``base_prompt``: the training ``prompt.*`` params; only ``user`` is varied, so the system
        turn and the audio's place in the prompt stay those the adapter was trained with."""
        self.model, self.processor, self.base_prompt, self.batch_size = model, processor, base_prompt, batch_size
        self.index = {cid: i for i, cid in enumerate(dev.frame["clip_id"])}
        self.audio = dev.audio
        self.calls = 0

    def __call__(self, user_prompt: str, clip_ids: Sequence[str]) -> np.ndarray:
        self.calls += 1
        clips = [self.audio[self.index[c]] for c in clip_ids]
        return score_ab(self.model, self.processor, clips, {**self.base_prompt, "user": user_prompt},
                        self.batch_size)


def make_proposer(cfg: dict, axes: dict) -> Proposer:
    """The proposer ``opro.proposer`` names; the LLM one loads ``opro.llm.model`` with transformers."""
    if cfg["proposer"] == "template":
        return TemplateProposer()
    from qvad.prompt_search.llm import GenerationSettings, LLMProposer  # torch-heavy: only when asked

    llm = cfg["llm"]
    return LLMProposer.from_pretrained(llm["model"], axes, GenerationSettings(
        max_new_tokens=int(llm["max_new_tokens"]), temperature=float(llm["temperature"]), top_p=float(llm["top_p"])),
        local_files_only=bool(llm["local_files_only"]), device=device())


def search_params(cfg: dict, seed: int) -> SearchParams:
    """Loop settings: the study's defaults for the chosen proposer, overridden by ``opro.search``."""
    base = LLM_DEFAULTS if cfg["proposer"] == "llm" else TEMPLATE_DEFAULTS
    over = {k: v for k, v in (cfg.get("search") or {}).items() if v is not None}
    unknown = set(over) - set(SEARCH_KEYS)
    require(not unknown, "opro.search", f"unknown keys {sorted(unknown)}; expected some of {SEARCH_KEYS}")
    return SearchParams.from_mapping({**over, "seed": seed}, base=base)


def optimize_prompt(params: dict) -> None:
    """Run the optimize_prompt stage with ``params`` (params.yaml as a dict)."""
    pin_cpu_numerics(params["cpu_threads"])  # before any tensor work
    cfg, prompt_cfg = dict(get(params, "opro")), dict(get(params, "prompt"))
    choice(params, "opro.proposer", PROPOSERS)
    seed, start = int(params["seed"]), time.perf_counter()
    group = join_group(params, device())  # train.processes > 1: the scoring is shared, rank 0 writes
    if cfg["proposer"] == "none":
        if group.is_main:
            write_json(PROMPT, {**prompt_cfg, "source": "training prompt (opro.proposer: none)"})
            write_json("metrics/opro.json", {"proposer": "none", "kept_training_prompt": True})
            write_plots([], prompt_cfg["user"])
        return
    dev = ClipDataset(DEV)
    without_adapter = bool(get(params, "evaluate.without_adapter"))
    model, processor = load_trained(get(params, "model"), adapter=None if without_adapter else ADAPTER)
    # Every candidate prompt hears the same dev clips: encode each clip once (on the CPU the
    # encoder was ~45 % of the stage), not once per candidate (where the encoder is frozen).
    accel.enable(model, device(), encoder_cache=True)
    scorer = DevScorer(model, processor, dev, prompt_cfg, int(get(params, "evaluate.batch_size")))
    frame = dev.frame
    devset = DevSet.build(frame["clip_id"], dev.labels,
                          [f"{d}ms/{s}dB" for d, s in zip(frame["duration_ms"], frame["snr_db"])])
    axes = {"duration_ms": sorted(frame["duration_ms"].unique().tolist()),
            "snr_db": sorted(frame["snr_db"].unique().tolist())}
    proposer = make_proposer(cfg, axes) if group.is_main else None
    if group.size > 1:
        proposer = SharedProposer(proposer)
    result = search_prompt(devset, scorer, proposer, prompt_cfg["user"], search_params(cfg, seed))
    if not group.is_main:
        return
    write_json(PROMPT, {**prompt_cfg, "user": result.chosen_prompt,
                        "source": "training prompt kept" if result.kept_training_prompt else f"opro-{cfg['proposer']}"})
    summary = result.summary()
    write_json("metrics/opro.json", {"proposer": cfg["proposer"], "scored_without_adapter": without_adapter,
                                     **_rounded(summary)})
    write_plots(result.history_records(), prompt_cfg["user"])
    TIMING.parent.mkdir(exist_ok=True)
    write_json(TIMING, {"wall_s": round(time.perf_counter() - start, 2), "scorer_calls": scorer.calls})


def _rounded(value: Any) -> Any:
    """Floats to 5 decimals, recursively: metrics diffs should show changes, not rounding."""
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def write_plots(history: list[dict], training_prompt: str) -> None:
    """Reward per scored candidate, and the best mini-dev reward so far per iteration, for `dvc plots`."""
    rows = pd.DataFrame(history, columns=["iteration", "candidate", "source", "prompt", "accepted", "reason",
                                          "reward", "balanced_accuracy", "n_clips"])
    scored = rows[rows["accepted"].astype(bool)] if len(rows) else rows
    write_csv("plots/opro_candidates.csv", scored.assign(
        is_training_prompt=scored["prompt"] == training_prompt)[["iteration", "candidate", "reward",
                                                                 "balanced_accuracy", "is_training_prompt"]])
    best = scored.groupby("iteration", as_index=False)["reward"].max() if len(scored) else \
        pd.DataFrame(columns=["iteration", "reward"])
    write_csv("plots/opro_best.csv", best.rename(columns={"reward": "best_reward"}))
