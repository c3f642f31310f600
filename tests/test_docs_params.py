"""Every `-S key=value` (and the GPU check's `--set key=value`) in README.md and docs/ names a real
params.yaml key, so a line a user copies cannot fail on a key renamed since it was written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from qvad.common.params import ParamsError, get

ROOT = Path(__file__).resolve().parents[1]
OVERRIDE = re.compile(r"(?:-S|--set)\s+([a-z_][\w.]*)=")  # lower case: `-S KEY=VALUE` is a placeholder
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def documented_keys(text: str) -> set[str]:
    """The dotted params keys that ``-S`` / ``--set`` overrides in ``text`` set."""
    return set(OVERRIDE.findall(text))


def missing_keys(keys: set[str], params: dict) -> list[str]:
    """The keys of ``keys`` that params has no value at (the stages' own lookup says so)."""
    missing = []
    for key in keys:
        try:
            get(params, key)
        except ParamsError:
            missing.append(key)
    return sorted(missing)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_documented_overrides_name_real_params_keys(page: Path) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert missing_keys(documented_keys(page.read_text(encoding="utf-8")), params) == []


def test_readme_documents_overrides() -> None:
    """The scan finds the README's lines at all (a changed flag spelling would make the test vacuous)."""
    keys = documented_keys((ROOT / "README.md").read_text(encoding="utf-8"))
    assert {"model.preset", "model.gradient_checkpointing", "train.batch_size"} <= keys


def test_a_renamed_key_is_caught() -> None:
    params = {"train": {"batch_size": 16}}
    text = 'Q="-S train.batch_size=8" ; dvc exp run $Q -S train.batch=4 --set model.dtype=bfloat16 -S KEY=VALUE'
    assert missing_keys(documented_keys(text), params) == ["model.dtype", "train.batch"]
