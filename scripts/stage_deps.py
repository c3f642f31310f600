"""Print the project code each DVC stage runs, from its imports, so dvc.yaml deps cannot drift.

A stage's code is the transitive closure of project imports (``qvad.*``, ``stages.*``) from its
script, lazy imports inside functions included, plus each package's ``__init__.py`` that Python
executes on the way. Imports that never run for the stage are left out: ``if TYPE_CHECKING:``
blocks, and a package's PEP 562 ``__getattr__`` (``qvad.Detector``) unless the stage's code
imports the name it provides (``from qvad import Detector``). ``tests/test_stage_deps.py`` fails when dvc.yaml misses one of them; run
``python scripts/stage_deps.py STAGE`` to print the list to paste.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Callable, Iterator
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


def _is_type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` (under any alias): imports that never run."""
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _lazy_getattr(node: ast.AST) -> bool:
    """A module-level ``def __getattr__`` (PEP 562): what it imports runs only when a name is asked for."""
    return isinstance(node, ast.FunctionDef) and node.name == "__getattr__"


def _from_base(node: ast.ImportFrom, package: str) -> str:
    """The module of ``from <module> import ...``, a relative one resolved against ``package``."""
    base = node.module or ""
    if node.level:
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*parts, base] if base else parts)
    return base


def _import_names(node: ast.AST, package: str) -> set[str]:
    """Modules an import statement names (relative imports resolved against ``package``)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if not isinstance(node, ast.ImportFrom):
        return set()
    base = _from_base(node, package)
    return {base} | {f"{base}.{alias.name}" for alias in node.names}  # `from pkg import module`


def _walk(tree: ast.AST, skip: Callable[[ast.AST], bool]) -> Iterator[ast.AST]:
    """``ast.walk`` that does not enter the nodes ``skip`` picks."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        todo.extend(child for child in ast.iter_child_nodes(node) if not skip(child))


def _package_of(path: Path, module: str) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def lazy_exports(path: Path, module: str) -> dict[str, set[str]]:
    """Names a module's PEP 562 ``__getattr__`` imports on first access -> the modules naming them.

    ``from qvad import Detector`` runs qvad/detector.py; ``import qvad`` alone does not, so only
    the modules that ask for the name depend on it.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: dict[str, set[str]] = {}
    for fn in (node for node in tree.body if _lazy_getattr(node)):
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    out.setdefault(alias.asname or alias.name, set()).update(
                        _import_names(node, _package_of(path, module)))
    return out


def _imported_modules(path: Path, module: str, root: Path = ROOT) -> set[str]:
    """Every module whose code an import statement in ``path`` runs (relative imports resolved),
    leaving out ``if TYPE_CHECKING:`` blocks and the lazy imports of a PEP 562 ``__getattr__``
    unless a name it provides is imported (``from package import Name``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _package_of(path, module)
    found: set[str] = set()
    for node in _walk(tree, lambda n: _is_type_checking(n) or (_lazy_getattr(n) and n in tree.body)):
        found |= _import_names(node, package)
        if isinstance(node, ast.ImportFrom):
            base = _from_base(node, package)
            source = module_file(base, root)
            lazy = lazy_exports(source, base) if source is not None else {}
            for alias in node.names:
                found |= lazy.get(alias.name, set())
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
            todo.extend(_imported_modules(path, prefix, root))
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
