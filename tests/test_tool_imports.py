"""Every Python module under benchmarks/ and scripts/ imports, so a stale import fails CI.

Nothing runs their ``main``: each is imported under its dotted name (``__name__`` is not
``"__main__"``). The GPU benchmarks are written to import on a CPU-only machine without triton;
shell scripts are not Python and are not checked here.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> list[str]:
    names = []
    for folder in ("benchmarks", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_tool_folder_has_modules() -> None:
    names = _modules()
    assert "scripts.stage_deps" in names and "benchmarks.latency" in names and "benchmarks.gpu.common" in names


@pytest.mark.parametrize("name", _modules())
def test_module_imports(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__name__ == name and module.__name__ != "__main__"
