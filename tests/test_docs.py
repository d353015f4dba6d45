"""The docs name only what exists: every repository path, module (``edge_resnet.x.y`` or a file path) and
``edge-resnet`` command that README.md and docs/*.md mention is there in the tree, so a rename cannot leave
the docs describing code that is gone."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

from tests.import_graph import ROOT, project

DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
# a path inside the repository: starts at one of its top-level folders or files
TOPS = ("edge_resnet/", "export/", "calibration/", "tests/", "benchmarks/", "docs/", ".ci/")
PATH = re.compile(r"(?<![\w./-])((?:%s)[\w./<>*{},-]*[\w*>/}])" % "|".join(re.escape(t) for t in TOPS))
MODULE = re.compile(r"(?<![\w./-])(edge_resnet(?:\.[A-Za-z_]\w*)+)")
COMMAND = re.compile(r"(?<![\w-])edge-resnet ([a-z][a-z0-9-]*)")
# words that follow "edge-resnet " in prose without being a command
NOT_COMMANDS = {"command", "refuses", "is", "exists", "and", "or", "the", "to", "on", "in", "has", "runs", "does", "itself", "writes",
                "reads", "takes", "makes", "checks", "was", "will", "can", "pick", "says", "knows", "never",
                "error", "internal", "from", "with", "for", "as", "at", "a", "an", "do", "of", "run", "bundle"}


# former names that docs/design-notes.md tells the history of (renamed in round 2): they must stay gone
FORMER = {"export/engine_key.py", "edge_resnet/verify.py", "calibration/cache.py", "edge_resnet/fp32.py"}


def _mentions(pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        for m in pattern.finditer(doc.read_text(encoding="utf-8")):
            out.append((doc.relative_to(ROOT).as_posix(), m.group(1).rstrip(".")))
    return out


def _expand(path: str) -> list[str]:
    """Shell brace expansion, as the docs use it: ``a_{x,y}.{json,txt}`` -> four names."""
    m = re.search(r"\{([^{}]*)\}", path)
    if m is None:
        return [path]
    return [p for alt in m.group(1).split(",") for p in _expand(path[:m.start()] + alt + path[m.end():])]


def _exists(path: str) -> bool:
    if "{" in path:
        return all(_exists(p) for p in _expand(path))
    if "<" in path or "*" in path:  # a pattern (`runs/<name>/`, `tests/fixtures/tensorrt/api/*.json`)
        head = re.split(r"[<*]", path)[0].rsplit("/", 1)[0]
        return (ROOT / head).exists()
    return (ROOT / path).exists()


def test_every_repository_path_in_the_docs_exists() -> None:
    mentioned = _mentions(PATH)
    missing = sorted({(doc, p) for doc, p in mentioned if p not in FORMER and not _exists(p)})
    assert not missing, "\n".join(f"{doc}: {p}" for doc, p in missing)
    assert not [p for p in FORMER if _exists(p)]


@functools.lru_cache(maxsize=None)
def _defined(module: str) -> frozenset[str]:
    """Names a module defines at its top level (functions, classes, assignments, imports)."""
    tree = ast.parse(project()[module].path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    if "lazy_exports" in names:  # a lazy package (edge_resnet/_lazy.py): its table names the exports
        names.update(re.findall(r'"(\w+)":', project()[module].path.read_text(encoding="utf-8")))
    return frozenset(names)


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        if module in project():
            rest = parts[cut:]
            return not rest or rest[0] in _defined(module) or f"{module}.{rest[0]}" in project()
    return False


def test_every_module_in_the_docs_exists() -> None:
    missing = sorted({(doc, m) for doc, m in _mentions(MODULE) if not _resolves(m)})
    assert not missing, "\n".join(f"{doc}: {m}" for doc, m in missing)


def test_every_command_in_the_docs_exists() -> None:
    from edge_resnet.cli import COMMANDS

    missing = sorted({(doc, c) for doc, c in _mentions(COMMAND) if c not in COMMANDS and c not in NOT_COMMANDS})
    assert not missing, "\n".join(f"{doc}: edge-resnet {c}" for doc, c in missing)


@pytest.mark.parametrize(("text", "pattern", "found"), [
    ("see `edge_resnet/fp32.py`", PATH, "edge_resnet/fp32.py"),
    ("run `edge-resnet quantise` on it", COMMAND, "quantise"),
    ("the `edge_resnet.runtime.backends.Nope` class", MODULE, "edge_resnet.runtime.backends.Nope"),
])
def test_the_checks_see_a_planted_stale_name(text: str, pattern: re.Pattern[str], found: str) -> None:
    """Each pattern picks the name out of prose, and the name is then judged missing."""
    (match,) = [m.group(1) for m in pattern.finditer(text)]
    assert match == found
    if pattern is PATH:
        assert not _exists(match)
    elif pattern is MODULE:
        assert not _resolves(match)
