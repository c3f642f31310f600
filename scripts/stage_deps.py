"""Print the project code each DVC stage runs, from its imports, so dvc.yaml deps cannot drift.

A stage's code is the transitive closure of project imports (``qvad.*``, ``stages.*``) from its
script, lazy imports inside functions included, plus each package's ``__init__.py`` that Python
executes on the way. ``tests/test_stage_deps.py`` fails when dvc.yaml misses one of them; run
``python scripts/stage_deps.py STAGE`` to print the list to paste.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("qvad", "stages")


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The file of a project module (package ``__init__`` or plain module), or None if not ours."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _imported_modules(path: Path, module: str) -> set[str]:
    """Every module named by an import statement in ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def closure(module: str, root: Path = ROOT) -> set[Path]:
    """Files of every project module that importing ``module`` runs, parents' ``__init__`` included."""
    seen: set[str] = set()
    files: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            prefix = ".".join(parts[:i])
            if prefix in seen:
                continue
            path = module_file(prefix, root)
            if path is None:
                continue
            seen.add(prefix)
            files.add(path.relative_to(root))
            todo.extend(_imported_modules(path, prefix))
    return files


def stage_modules(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict[str, list[str]]:
    """Stage name -> the modules its ``python -m`` command runs: the one after ``-m`` and a stage
    module it is handed (``python -m qvad.parallel.launch stages.train`` runs both)."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        match = re.search(r"python\S* -m (\S+)((?: stages\.\S+)?)", stage["cmd"])
        if match:
            out[name] = [match.group(1), *match.group(2).split()]
    return out


def stage_closure(modules: list[str], root: Path = ROOT) -> set[Path]:
    """:func:`closure` of every module a stage's command runs."""
    return set().union(*(closure(module, root) for module in modules))


def main(argv: list[str]) -> int:
    modules = stage_modules()
    for name in argv or modules:
        print(f"{name}:")
        for path in sorted(stage_closure(modules[name])):
            print(f"  - {path.as_posix()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
