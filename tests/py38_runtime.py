"""What Python 3.8 (JetPack 5) would evaluate and reject, found statically: no 3.8 interpreter can be had here.

vermin knows the standard library's API by version but reads ``str | None`` as an integer ``|`` and
``list[int]`` as an index, and ``from __future__ import annotations`` only defers annotations. So this
check looks at every expression Python evaluates (module level, class bodies, function bodies, defaults,
decorators, ``cast`` and ``isinstance`` arguments, aliases) and reports:

- PEP 585 generics subscripted at run time (3.9): ``list[int]``, ``collections.abc.Callable[...]``,
  ``contextlib.AbstractContextManager[...]``, ``re.Pattern[...]``, ``os.PathLike[...]``...;
- PEP 604 unions at run time (3.10): ``X | Y`` where both sides are types;
- dict union ``{...} | other`` (3.9) where one side is visibly a dict;
- annotations that 3.8 evaluates: in a module without ``from __future__ import annotations``, every
  function and module/class-level annotation; ``typing.get_type_hints`` evaluates them anywhere;
- methods that exist only from 3.9/3.10 called on a receiver vermin cannot type (``x.removeprefix``).

Not reported: annotations a module defers, string annotations, ``if TYPE_CHECKING:`` blocks, integer and
flag unions (``a | b``, ``re.I | re.M``). Names are resolved through the module's imports, so
``from collections.abc import Callable as C; C[[int], None]`` is found.

usage: python tests/py38_runtime.py FILE.py ...   one line per finding; exit 1 when there are any.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

# Standard-library classes that became subscriptable in 3.9 (PEP 585), by qualified name
_ABC = ("Awaitable", "Coroutine", "AsyncIterable", "AsyncIterator", "AsyncGenerator", "Iterable", "Iterator",
        "Generator", "Reversible", "Container", "Collection", "Callable", "Set", "MutableSet", "Mapping",
        "MutableMapping", "Sequence", "MutableSequence", "ByteString", "MappingView", "KeysView", "ItemsView",
        "ValuesView")
GENERIC_39 = frozenset(
    [f"builtins.{n}" for n in ("tuple", "list", "dict", "set", "frozenset", "type")]
    + [f"collections.abc.{n}" for n in _ABC]
    + [f"collections.{n}" for n in ("deque", "defaultdict", "OrderedDict", "Counter", "ChainMap")]
    + ["contextlib.AbstractContextManager", "contextlib.AbstractAsyncContextManager", "re.Pattern", "re.Match",
       "os.PathLike", "queue.Queue", "queue.SimpleQueue", "subprocess.Popen", "subprocess.CompletedProcess",
       "concurrent.futures.Future", "functools.partial", "functools.partialmethod", "itertools.chain",
       "dataclasses.Field", "weakref.ref", "weakref.WeakSet", "weakref.WeakKeyDictionary",
       "weakref.WeakValueDictionary", "multiprocessing.queues.SimpleQueue", "shelve.Shelf", "types.MappingProxyType"])
BUILTIN_TYPES = frozenset({"int", "float", "complex", "str", "bytes", "bytearray", "bool", "object", "type",
                           "tuple", "list", "dict", "set", "frozenset", "memoryview", "range", "slice"})
# called on a receiver of unknown type, vermin cannot place these
NEW_METHODS = {"removeprefix": "3.9", "removesuffix": "3.9", "is_relative_to": "3.9", "with_stem": "3.9",
               "bit_count": "3.10", "hardlink_to": "3.10", "randbytes": "3.9"}
_MODULE_ALIASES = {"collections.abc", "typing"}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


class _Names:
    """Local names -> qualified names, from the module's imports (``Callable`` -> ``collections.abc.Callable``)."""

    def __init__(self, tree: ast.Module) -> None:
        self.bound: dict[str, str] = {}
        self.classes: set[str] = set()
        self.shadowed: set[str] = set()  # builtin names the module rebinds (a parameter called `list`)
        for node in ast.walk(tree):
            if isinstance(node, ast.arg):
                self.shadowed.add(node.arg)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                self.shadowed.add(node.id)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    self.bound[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    self.bound[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.ClassDef):
                self.classes.add(node.name)

    def qualified(self, node: ast.expr) -> str | None:
        """``a.b.c`` with ``a`` resolved through the imports; builtins for unbound builtin names."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        head = self.bound.get(node.id)
        if head is None:
            builtin = node.id in BUILTIN_TYPES and node.id not in self.classes | self.shadowed
            head = f"builtins.{node.id}" if builtin else node.id
        return ".".join([head, *reversed(parts)])

    def is_type(self, node: ast.expr) -> bool:
        """Visibly a type: None, a builtin type, a typing/generic subscript, a class-like name (CapWords)."""
        if isinstance(node, ast.Constant):
            return node.value is None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self.is_type(node.left) and self.is_type(node.right)
        if isinstance(node, ast.Subscript):
            q = self.qualified(node.value) or ""
            return q in GENERIC_39 or q.startswith("typing.") or _capwords(q.rsplit(".", 1)[-1])
        q = self.qualified(node)
        if q is None:
            return False
        return q.startswith("builtins.") or q.startswith("typing.") or _capwords(q.rsplit(".", 1)[-1])


def _capwords(name: str) -> bool:
    return name[:1].isupper() and any(c.islower() for c in name)


def _skipped(tree: ast.Module, deferred: bool) -> set[int]:
    """ids of nodes Python 3.8 never evaluates: deferred annotations, TYPE_CHECKING blocks, local annotations."""
    skip: set[int] = set()

    def mark(node: ast.AST | None) -> None:
        if node is not None:
            skip.update(id(n) for n in ast.walk(node))

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for b in child.body:
                    mark(b)
                for b in child.orelse:
                    visit(b, in_function)
                continue
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if deferred:
                    mark(child.returns)
                    for a in [*child.args.posonlyargs, *child.args.args, *child.args.kwonlyargs,
                              child.args.vararg, child.args.kwarg]:
                        mark(a.annotation if a is not None else None)
                visit(child, True)
                continue
            if isinstance(child, ast.Lambda):
                visit(child, True)
                continue
            if isinstance(child, ast.AnnAssign) and (deferred or in_function):
                mark(child.annotation)  # a local variable's annotation is never evaluated
            visit(child, in_function)

    visit(tree, False)
    return skip


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _defers_annotations(tree: ast.Module) -> bool:
    return any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and
               any(a.name == "annotations" for a in n.names) for n in tree.body)


def _is_dict(node: ast.expr, names: _Names) -> bool:
    if isinstance(node, (ast.Dict, ast.DictComp)):
        return True
    return isinstance(node, ast.Call) and names.qualified(node.func) in ("builtins.dict", "dict")


def check_source(source: str, path: str = "<source>") -> list[Finding]:
    """Every construct in ``source`` that Python 3.8 would evaluate and reject, by line."""
    tree = ast.parse(source, path)
    names = _Names(tree)
    skip = _skipped(tree, _defers_annotations(tree))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Subscript):
            q = names.qualified(node.value)
            if q in GENERIC_39:
                shown = q.replace("builtins.", "")
                found.add((node.lineno, f"{shown}[...] evaluated at run time needs Python 3.9 (PEP 585); use "
                                        f"typing's generic or a string"))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            if names.is_type(node.left) and names.is_type(node.right):
                found.add((node.lineno, f"`{ast.unparse(node)[:60]}` type union evaluated at run time needs "
                                        "Python 3.10 (PEP 604); use typing.Union/Optional"))
            elif _is_dict(node.left, names) or _is_dict(node.right, names):
                found.add((node.lineno, "dict union `|` needs Python 3.9; use {**a, **b}"))
        elif isinstance(node, ast.Call):
            q = names.qualified(node.func) or ""
            if q.endswith("get_type_hints"):
                found.add((node.lineno, "get_type_hints() evaluates annotations at run time (3.10 unions in "
                                        "them fail on 3.8)"))
            if isinstance(node.func, ast.Attribute) and node.func.attr in NEW_METHODS:
                found.add((node.lineno, f".{node.func.attr}() needs Python {NEW_METHODS[node.func.attr]}"))
            if q == "builtins.zip" or q == "zip":
                if any(k.arg == "strict" for k in node.keywords):
                    found.add((node.lineno, "zip(strict=) needs Python 3.10"))
    return [Finding(path, line, what) for line, what in sorted(found)]


def check_file(path: Path) -> list[Finding]:
    return check_source(path.read_text(encoding="utf-8"), str(path))


def main(argv: list[str]) -> int:
    findings = [f for p in argv for f in check_file(Path(p))]
    for f in findings:
        print(f)
    print(f"{len(findings)} construct(s) Python 3.8 would reject at run time, in {len(argv)} files")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
