"""The project's import graph, read from the source (no module is imported).

Maps each source file to the name it installs as (``export/lint.py`` is ``edge_resnet.export.lint``)
and records what it imports, at module level and inside functions, resolved to project module
names where the target is ours. The packaging and layering tests walk it.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# repository folder -> installed package (pyproject's package-dir)
PACKAGE_DIRS = {"edge_resnet": "edge_resnet", "export": "edge_resnet.export", "calibration": "edge_resnet.calibration"}


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    top_level: frozenset[str]  # imported when the module is imported
    deferred: frozenset[str]  # imported inside functions


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts == ["cli"]:
        return "cli"
    head = PACKAGE_DIRS[parts[0]]
    tail = parts[1:]
    if tail and tail[-1] == "__init__":
        tail = tail[:-1]
    return ".".join([head, *tail])


def _absolute(node: ast.ImportFrom, package: str) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
        base = f"{base}.{node.module}" if node.module else base
    return [base] + [f"{base}.{a.name}" for a in node.names]


def _imports(tree: ast.Module, package: str) -> tuple[set[str], set[str]]:
    top, deferred = set(), set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                (deferred if in_function else top).update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                (deferred if in_function else top).update(_absolute(child, package))
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                continue  # typing-only imports never run
            visit(child, inner)

    visit(tree, False)
    return top, deferred


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@functools.lru_cache(maxsize=None)
def project() -> dict[str, Module]:
    """Every module of the installed distribution, by its installed name."""
    files = [ROOT / "cli.py"] + [p for d in PACKAGE_DIRS for p in sorted((ROOT / d).rglob("*.py"))]
    modules = {}
    for path in files:
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        top, deferred = _imports(ast.parse(path.read_text(), str(path)), package)
        modules[name] = Module(name, path, frozenset(top), frozenset(deferred))
    return modules


def _ours(names: frozenset[str], modules: dict[str, Module]) -> set[str]:
    """The project modules among imported names (``from a.b import c`` names a.b, and a.b.c if a module),
    plus the packages above each (importing a.b.c runs a/__init__ and a/b/__init__)."""
    out = set()
    for n in names:
        if n in modules:
            parts = n.split(".")
            out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in modules)
    return out


def closure(entries: list[str], *, deferred: bool = False) -> set[str]:
    """Project modules imported (transitively) by importing ``entries``; with ``deferred``, also
    those imported inside their functions."""
    modules = project()
    seen: set[str] = set()
    todo = list(_ours(frozenset(entries), modules))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        m = modules[name]
        todo.extend(_ours(m.top_level | (m.deferred if deferred else frozenset()), modules) - seen)
    return seen


def external(names: set[str], *, deferred: bool = False) -> dict[str, set[str]]:
    """Third-party top-level packages imported by each module of ``names``."""
    modules = project()
    out = {}
    for n in names:
        m = modules[n]
        imported = m.top_level | (m.deferred if deferred else frozenset())
        out[n] = {i.split(".")[0] for i in imported if i.split(".")[0] not in ("edge_resnet", "cli", "")}
    return out


def torch_free() -> set[str]:
    """Modules importable without torch: neither they nor anything they import at module level imports
    torch or torchvision. The device install (`pip install edge-resnet`) can import every one of them, so
    every one must run on the device's Python (3.8 on JetPack 5)."""
    modules = project()
    heavy = {"torch", "torchvision"}
    return {m for m in modules
            if not any(heavy & imported for imported in external(closure([m])).values())}
