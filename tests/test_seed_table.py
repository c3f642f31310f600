"""The seed table keeps only the runs that change a seed, so other experiments cannot pose as seed variance."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("seed_table", ROOT / "scripts" / "seed_table.py")
seed_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seed_table)


def _run(name: str, **changes: object) -> dict:
    params = {"seed": 1234, "train": {"seed": None, "epochs": 3}, "prompt": {"audio_position": "before_question"}}
    for key, value in changes.items():
        section, _, leaf = key.partition("__")
        if leaf:
            params[section] = {**params[section], leaf: value}
        else:
            params[section] = value
    return {"name": name, "rev": name, "params": params, "eval": {"systems": {}}}


def test_seed_runs_keep_seed_changes_and_drop_other_experiments() -> None:
    runs = [_run("base"), _run("s1", train__seed=1), _run("data", seed=7),
            _run("layout", prompt__audio_position="after_question"), _run("longer", train__epochs=6)]
    assert [r["name"] for r in seed_table.seed_runs(runs)] == ["base", "s1", "data"]
