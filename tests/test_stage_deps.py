"""dvc.yaml's code deps cover every project module each stage imports, so `dvc status` can't lie."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("stage_deps", ROOT / "scripts" / "stage_deps.py")
stage_deps = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stage_deps)


def _missing(stage: dict, needed: set[Path]) -> list[str]:
    """Needed files that no dep (a file, or a folder above it) covers."""
    deps = [Path(d if isinstance(d, str) else next(iter(d))) for d in stage.get("deps", [])]
    return sorted(p.as_posix() for p in needed if not any(p == d or d in p.parents for d in deps))


@pytest.mark.parametrize("name", sorted(stage_deps.stage_modules()))
def test_stage_depends_on_all_code_it_imports(name: str) -> None:
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][name]
    needed = stage_deps.stage_closure(stage_deps.stage_modules()[name])
    assert _missing(stage, needed) == [], f"run `python scripts/stage_deps.py {name}` and update dvc.yaml"


def test_planted_stale_dependency_is_caught(tmp_path: Path) -> None:
    """A lazy import added inside a function is found, and a dvc.yaml without it fails the check."""
    (tmp_path / "qvad" / "sub").mkdir(parents=True)
    (tmp_path / "stages").mkdir()
    for init in ("qvad/__init__.py", "qvad/sub/__init__.py", "stages/__init__.py"):
        (tmp_path / init).write_text("")
    (tmp_path / "qvad" / "sub" / "helper.py").write_text("X = 1\n")
    (tmp_path / "qvad" / "sub" / "work.py").write_text("def run():\n    from .helper import X\n    return X\n")
    (tmp_path / "stages" / "s.py").write_text("from qvad.sub.work import run\n")
    needed = stage_deps.closure("stages.s", tmp_path)
    assert Path("qvad/sub/helper.py") in needed
    stale = {"deps": ["stages/s.py", "qvad/sub/work.py", "qvad/__init__.py", "qvad/sub/__init__.py",
                      "stages/__init__.py"]}
    assert _missing(stale, needed) == ["qvad/sub/helper.py"]
    assert _missing({"deps": ["stages", "qvad/sub", "qvad/__init__.py"]}, needed) == []


def test_lazy_exports_count_only_where_the_name_is_imported(tmp_path: Path) -> None:
    """A PEP 562 ``__getattr__`` in a package runs its import only when the name is asked for, and an
    ``if TYPE_CHECKING:`` import never runs: ``import qvad`` alone must not depend on the lazy module."""
    (tmp_path / "qvad" / "sub").mkdir(parents=True)
    (tmp_path / "stages").mkdir()
    (tmp_path / "qvad" / "__init__.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from qvad.sub.heavy import Heavy\n"
        "def __getattr__(name):\n    if name == 'Heavy':\n        from qvad.sub.heavy import Heavy\n"
        "        return Heavy\n    raise AttributeError(name)\n")
    for init in ("qvad/sub/__init__.py", "stages/__init__.py"):
        (tmp_path / init).write_text("")
    (tmp_path / "qvad" / "sub" / "heavy.py").write_text("class Heavy: ...\n")
    (tmp_path / "stages" / "light.py").write_text("import qvad\n")
    (tmp_path / "stages" / "uses.py").write_text("from qvad import Heavy\n")
    assert Path("qvad/sub/heavy.py") not in stage_deps.closure("stages.light", tmp_path)
    assert Path("qvad/sub/heavy.py") in stage_deps.closure("stages.uses", tmp_path)
