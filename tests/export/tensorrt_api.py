"""Which TensorRT Python names our code touches, and whether each TensorRT version has them.

The names are found by reading our own modules (``ast``), not from a hand-kept list: every
attribute taken from the ``tensorrt`` module (``trt.Builder``, ``trt.BuilderFlag.INT8``), from an
object TensorRT returned (``builder.create_builder_config()`` is an ``IBuilderConfig``, so
``config.set_timing_cache`` is ``IBuilderConfig.set_timing_cache``), every method a subclass of a
TensorRT class overrides, and every keyword argument passed to a TensorRT method. Types follow
the return types the real bindings declare (``tests/fixtures/tensorrt/api/*.json``).

Each use carries the conditions under which it runs: the ``if`` tests around it in its function and
in the functions that call it. A test that reads the build plan (``plan.int8_mode == "implicit"``)
is evaluated against every plan ``edge_resnet.export.build_plan.plan_build`` makes for a version, so a use is
required in a version exactly when some build of that version reaches it. A name reached through
``getattr(trt, "X", None)`` is required only where ``X`` exists.

``python -m tests.export.tensorrt_api`` prints the conformance table; ``--write`` records it in
``tests/fixtures/tensorrt/CONFORMANCE.md`` (a test keeps that file current).
"""

from __future__ import annotations

import ast
import itertools
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "tensorrt"
CONFORMANCE = FIXTURES / "CONFORMANCE.md"
# our code: the library, the stages and the CLI (tests and benchmarks are not shipped)
SCANNED = ("edge_resnet", "export", "calibration", "cli.py")


# ---------------------------------------------------------------- the name tables

@dataclass(frozen=True)
class Member:
    kind: str  # method, property, value, class, function
    returns: tuple[str, ...] = ()  # return type per overload (property: one)
    args: tuple[tuple[str, ...], ...] = ()  # argument names per overload (methods with known signatures)


def decode_member(text: str) -> Member:
    """The inverse of regenerate.encode_member: "method(a, b) -> R | method() -> S", "property rw -> R"."""
    if text.startswith(("method(", "function(")):
        kind = text.split("(", 1)[0]
        sigs = [re.fullmatch(r"\w+\((.*)\) -> (.+)", s.strip()) for s in text.split(" | ")]
        return Member(kind, tuple(m.group(2) for m in sigs if m),
                      tuple(tuple(a for a in m.group(1).split(", ") if a) for m in sigs if m))
    m = re.fullmatch(r"property(?: rw)? -> (.+)", text)
    if m:
        return Member("property", (m.group(1),))
    return Member(text.split(":")[0])


@dataclass(frozen=True)
class Table:
    """One TensorRT version's Python names (a tests/fixtures/tensorrt/api file)."""

    version: str
    origin: str
    names: dict

    @classmethod
    def load(cls, path: Path) -> Table:
        data = json.loads(path.read_text())
        return cls(data["version"] if "version" in data else path.stem, data.get("origin", ""), data["names"])

    def has(self, path: str) -> bool:
        head, _, rest = path.partition(".")
        entry = self.names.get(head)
        if entry is None:
            return False
        if not rest:
            return True
        return rest in entry.get("members", {}) or rest in entry.get("values", ())

    def member(self, cls: str, name: str) -> Member | None:
        entry = self.names.get(cls)
        if entry is None:
            return None
        if name in entry.get("members", {}):
            return decode_member(entry["members"][name])
        if name in entry.get("values", ()):
            return Member("value", (cls,))
        return None

    def kind(self, name: str) -> str | None:
        entry = self.names.get(name)
        return None if entry is None else entry["kind"]


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


@cache
def tables() -> dict[str, Table]:
    """Every recorded version, oldest first."""
    found = {p.stem: Table.load(p) for p in (FIXTURES / "api").glob("*.json")}
    return {v: found[v] for v in sorted(found, key=_version_key)}


@cache
def trtexec_options() -> dict[str, frozenset[str]]:
    """trtexec's accepted options per version (tests/fixtures/tensorrt/trtexec)."""
    out = {}
    for p in sorted((FIXTURES / "trtexec").glob("*.json"), key=lambda p: _version_key(p.stem)):
        out[p.stem] = frozenset(json.loads(p.read_text())["options"])
    return out


def _member_anywhere(cls: str, name: str) -> Member | None:
    """The member's types from the newest table that declares them (older tables parsed from source
    have names only; return types do not change between versions for what we call)."""
    best = None
    for table in reversed(tables().values()):
        m = table.member(cls, name)
        if m is not None and (m.returns or best is None):
            best = m
            if m.returns:
                break
    return best


def _is_class(name: str) -> bool:
    return any(t.kind(name) in ("class", "enum") for t in tables().values())


# ---------------------------------------------------------------- what the scanner finds

@dataclass(frozen=True)
class Use:
    """One TensorRT name our code relies on, and when."""

    name: str  # "IBuilderConfig.set_timing_cache", "BuilderFlag.INT8", "Logger", "nptype", "BuilderFlag.*"
    where: str  # "export/engine.py:123"
    function: str  # qualified function name in that module
    kind: str = "attribute"  # attribute | override | keyword | probe | dynamic
    guards: tuple[ast.expr, ...] = ()  # the if-tests around it in its own function
    # local names bound by getattr(trt, "X", None) in scope -> "X": their truth is known per version
    optional: dict = field(default_factory=dict, compare=False, hash=False)
    requires: str | None = None  # reached through such a name: needed only where that class exists

    def label(self) -> str:
        return {"attribute": self.name, "override": f"{self.name} (overridden)",
                "keyword": f"{self.name} (keyword)", "probe": f"{self.name} (probed)",
                "dynamic": f"{self.name} (by name)"}[self.kind]


@dataclass(frozen=True)
class T:
    """What an expression is: the tensorrt module, one of its classes, or an instance of one."""

    kind: str  # module | class | instance
    name: str = ""
    optional_var: str | None = None  # bound via getattr(trt, "X", None) to this local name


MODULE = T("module")
TERMINATES = (ast.Return, ast.Raise)


def _loads_tensorrt(node: ast.expr, functions: tuple[str, ...]) -> bool:
    """``require("tensorrt", ...)`` and the like: edge_resnet.optional's functions, called for tensorrt."""
    if not isinstance(node, ast.Call) or not node.args or not isinstance(node.args[0], ast.Constant):
        return False
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    return name in functions and node.args[0].value == "tensorrt"


class _Function:
    def __init__(self, node: ast.FunctionDef | ast.AsyncFunctionDef, qualname: str, owner: str | None) -> None:
        self.node, self.qualname, self.owner = node, qualname, owner
        self.params: dict[str, T] = {}
        self.returns: T | None = None
        self.calls: list[tuple[str, tuple[ast.expr, ...]]] = []  # (callee, guards at the call)


class ModuleScanner:
    """Finds the uses in one module. Types flow through local variables, ``self`` attributes,
    arguments of the module's own functions and their return values."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rel = str(path.relative_to(ROOT))
        self.tree = ast.parse(path.read_text(), str(path))
        self.functions: dict[str, _Function] = {}
        self.self_attrs: dict[str, dict[str, T]] = {}
        for node in self.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions[node.name] = _Function(node, node.name, None)
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        q = f"{node.name}.{item.name}"
                        self.functions[q] = _Function(item, q, node.name)
        self.uses: list[Use] = []

    # ---- driving

    def scan(self) -> list[Use]:
        for _ in range(4):  # argument and return types settle in a couple of rounds
            before = self._signature_state()
            self.uses = []
            for f in self.functions.values():
                f.calls = []
            for f in self.functions.values():
                self._walk_function(f)
            if self._signature_state() == before:
                break
        return self.uses

    def _signature_state(self) -> tuple:
        return tuple((q, tuple(sorted(f.params.items())), f.returns) for q, f in self.functions.items()) + \
            tuple((c, tuple(sorted(a.items()))) for c, a in sorted(self.self_attrs.items()))

    def contexts(self, qualname: str, seen: frozenset[str] = frozenset()) -> list[tuple[ast.expr, ...]]:
        """Guard lists under which ``qualname`` runs: one per call path from a function nobody here calls."""
        callers = [(f, guards) for f in self.functions.values() for callee, guards in f.calls if callee == qualname]
        if not callers or qualname in seen:
            return [()]
        out = []
        for caller, guards in callers:
            for ctx in self.contexts(caller.qualname, seen | {qualname}):
                out.append(ctx + guards)
        return out

    # ---- statements

    def _walk_function(self, f: _Function) -> None:
        env: dict[str, T] = {}
        for a in f.node.args.posonlyargs + f.node.args.args + f.node.args.kwonlyargs:
            if a.arg == "trt":  # our convention: the tensorrt module passed in
                env[a.arg] = MODULE
            elif a.arg in f.params:
                env[a.arg] = f.params[a.arg]
        self._block(f.node.body, env, (), f)

    def _block(self, body: list[ast.stmt], env: dict[str, T], guards: tuple[ast.expr, ...], f: _Function) -> None:
        for stmt in body:
            self._stmt(stmt, env, guards, f)
            if isinstance(stmt, ast.If) and not stmt.orelse and stmt.body and isinstance(stmt.body[-1], TERMINATES):
                # `if x is None: return` - what follows runs only when the test was false
                guards = guards + (ast.UnaryOp(ast.Not(), stmt.test),)

    def _stmt(self, stmt: ast.stmt, env: dict[str, T], guards: tuple[ast.expr, ...], f: _Function) -> None:
        if isinstance(stmt, ast.If):
            self._expr(stmt.test, env, guards, f)
            self._block(stmt.body, dict(env), guards + (stmt.test,), f)
            self._block(stmt.orelse, dict(env), guards + (ast.UnaryOp(ast.Not(), stmt.test),), f)
            return
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                if isinstance(stmt, ast.Import) and alias.name == "tensorrt":
                    env[alias.asname or alias.name] = MODULE
            return
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inner = _Function(stmt, f"{f.qualname}.{stmt.name}", None)
            self._block(stmt.body, dict(env), guards, inner)
            return
        if isinstance(stmt, ast.ClassDef):
            self._class(stmt, env, guards, f)
            return
        if isinstance(stmt, ast.Assign):
            value = self._expr(stmt.value, env, guards, f)
            for target in stmt.targets:
                self._assign(target, stmt.value, value, env, guards, f)
            return
        if isinstance(stmt, (ast.AnnAssign, ast.AugAssign)) and stmt.value is not None:
            value = self._expr(stmt.value, env, guards, f)
            if isinstance(stmt, ast.AnnAssign):
                self._assign(stmt.target, stmt.value, value, env, guards, f)
            return
        if isinstance(stmt, ast.Return) and stmt.value is not None:
            t = self._expr(stmt.value, env, guards, f)
            if t is not None and t.kind == "module":
                self.functions.get(f.qualname, f).returns = t
            return
        for child in ast.iter_child_nodes(stmt):
            if isinstance(child, ast.expr):
                self._expr(child, env, guards, f)
            elif isinstance(child, ast.stmt):
                self._stmt(child, env, guards, f)
            elif isinstance(child, ast.excepthandler):
                self._block(child.body, env, guards, f)
            elif isinstance(child, ast.withitem):
                self._expr(child.context_expr, env, guards, f)
        for name in ("body", "orelse", "finalbody"):
            if isinstance(getattr(stmt, name, None), list) and not isinstance(stmt, ast.If):
                pass  # iter_child_nodes above visited them

    def _assign(self, target: ast.expr, node: ast.expr, value: T | None, env: dict[str, T],
                guards: tuple[ast.expr, ...], f: _Function) -> None:
        if isinstance(target, ast.Tuple) and isinstance(node, ast.Tuple) and len(target.elts) == len(node.elts):
            for t, v in zip(target.elts, node.elts, strict=True):
                self._assign(t, v, self._expr(v, env, (), f, record=False), env, guards, f)
            return
        if isinstance(target, ast.Tuple) and target.elts and isinstance(target.elts[0], ast.Name) and \
                _loads_tensorrt(node, ("load",)):  # `trt, why = load("tensorrt")`: the module, or None and why
            env[target.elts[0].id] = MODULE
            return
        if isinstance(target, ast.Name):
            if value is not None:
                env[target.id] = replace(value, optional_var=target.id) if value.optional_var == "?" else value
            else:
                env.pop(target.id, None)
        elif isinstance(target, ast.Attribute):
            owner = self._expr(target.value, env, guards, f)
            if isinstance(target.value, ast.Name) and target.value.id == "self" and f.owner and value is not None:
                self.self_attrs.setdefault(f.owner, {})[target.attr] = value
            elif owner is not None:
                self._record(owner, target.attr, target, guards, f, env)

    def _class(self, node: ast.ClassDef, env: dict[str, T], guards: tuple[ast.expr, ...], f: _Function) -> None:
        """A subclass of a TensorRT class: each method it defines overrides one TensorRT must have."""
        bases = [self._expr(b, env, guards, f) for b in node.bases]
        base = next((b for b in bases if b is not None and b.kind == "class"), None)
        for item in node.body:
            if not isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if base is not None and not item.name.startswith("__"):
                self.uses.append(Use(f"{base.name}.{item.name}", f"{self.rel}:{item.lineno}", f.qualname, "override",
                                     guards, self._optional(env), self._requires(base)))
            inner = _Function(item, f"{f.qualname}.{node.name}.{item.name}", None)
            self._block(item.body, dict(env), guards, inner)

    # ---- expressions

    def _optional(self, env: dict[str, T]) -> dict:
        return {k: v.name for k, v in env.items() if v.optional_var == k}

    @staticmethod
    def _requires(t: T | None) -> str | None:
        return t.name if t is not None and t.optional_var and t.optional_var != "?" else None

    def _record(self, owner: T, attr: str, node: ast.AST, guards: tuple[ast.expr, ...], f: _Function,
                env: dict[str, T], kind: str = "attribute") -> T | None:
        if attr.startswith("__") and attr != "__version__":
            return None
        if owner.kind == "module":
            name = attr
        elif owner.kind in ("class", "instance"):
            name = f"{owner.name}.{attr}"
        else:
            return None
        self.uses.append(Use(name, f"{self.rel}:{node.lineno}", f.qualname, kind, guards, self._optional(env),
                             self._requires(owner)))
        if owner.kind == "module":
            return T("class", attr) if _is_class(attr) else None
        m = _member_anywhere(owner.name, attr)
        if m is None:
            return None
        if m.kind == "property" and m.returns and _is_class(m.returns[0]):
            return T("instance", m.returns[0])
        if m.kind == "class":
            return T("class", attr)
        if m.kind == "method":
            return T("method", f"{owner.name}.{attr}")
        return None

    def _expr(self, node: ast.expr, env: dict[str, T], guards: tuple[ast.expr, ...], f: _Function,
              record: bool = True) -> T | None:
        if not record:
            saved = self.uses
            self.uses = []
            try:
                return self._expr(node, env, guards, f)
            finally:
                self.uses = saved
        if isinstance(node, ast.Name):
            return env.get(node.id)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self" and f.owner is not None:
                return self.self_attrs.get(f.owner, {}).get(node.attr)
            owner = self._expr(node.value, env, guards, f)
            return self._record(owner, node.attr, node, guards, f, env) if owner is not None else None
        if isinstance(node, ast.Call):
            return self._call(node, env, guards, f)
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            inner = dict(env)
            for gen in node.generators:
                self._expr(gen.iter, inner, guards, f)
                for cond in gen.ifs:
                    self._expr(cond, inner, guards, f)
            for part in ("elt", "key", "value"):
                if getattr(node, part, None) is not None:
                    self._expr(getattr(node, part), inner, guards, f)
            return None
        if isinstance(node, ast.IfExp):
            self._expr(node.test, env, guards, f)
            a = self._expr(node.body, env, guards + (node.test,), f)
            b = self._expr(node.orelse, env, guards + (ast.UnaryOp(ast.Not(), node.test),), f)
            return a or b
        if isinstance(node, ast.Lambda):
            return None
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self._expr(child, env, guards, f)
            elif isinstance(child, ast.comprehension):
                self._expr(child.iter, env, guards, f)
        return None

    def _call(self, node: ast.Call, env: dict[str, T], guards: tuple[ast.expr, ...], f: _Function) -> T | None:
        func = node.func
        if _loads_tensorrt(node, ("require", "probe")):  # edge_resnet.optional: the one way to import it
            return MODULE
        if isinstance(func, ast.Name) and func.id in ("getattr", "hasattr") and len(node.args) >= 2:
            owner = self._expr(node.args[0], env, guards, f)
            key = node.args[1]
            for extra in node.args[2:]:
                self._expr(extra, env, guards, f)
            if owner is None:
                self._expr(key, env, guards, f)
                return None
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                self._expr(key, env, guards, f)
                name = owner.name if owner.kind != "module" else "tensorrt"
                self.uses.append(Use(f"{name}.*", f"{self.rel}:{node.lineno}", f.qualname, "dynamic", guards,
                                     self._optional(env), self._requires(owner)))
                return None
            probe = func.id == "hasattr" or len(node.args) > 2
            t = self._record(owner, key.value, node, guards, f, env, "probe" if probe else "attribute")
            if probe and t is not None:
                return replace(t, optional_var="?")
            return t
        callee = self._expr(func, env, guards, f)
        args = [self._expr(a, env, guards, f) for a in node.args]
        for kw in node.keywords:
            self._expr(kw.value, env, guards, f)
        if callee is not None and callee.kind == "class":
            return T("instance", callee.name)
        if callee is not None and callee.kind == "method":
            for kw in node.keywords:
                if kw.arg:
                    self.uses.append(Use(f"{callee.name}({kw.arg}=)", f"{self.rel}:{node.lineno}", f.qualname,
                                         "keyword", guards, self._optional(env)))
            cls, name = callee.name.split(".", 1)
            m = _member_anywhere(cls, name)
            if m is not None and m.returns and _is_class(m.returns[0]):
                return T("instance", m.returns[0])
            return None
        own = self._own_function(func, f)
        if own is not None:
            f.calls.append((own.qualname, guards))
            positional = [a.arg for a in own.node.args.posonlyargs + own.node.args.args]
            if own.owner is not None and positional and positional[0] == "self":
                positional = positional[1:]
            for name, t in zip(positional, args, strict=False):
                if t is not None and t.kind in ("module", "instance"):
                    own.params[name] = replace(t, optional_var=None)
            return own.returns
        return None

    def _own_function(self, func: ast.expr, f: _Function) -> _Function | None:
        if isinstance(func, ast.Name):
            return self.functions.get(func.id)
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self" \
                and f.owner is not None:
            return self.functions.get(f"{f.owner}.{func.attr}")
        return None


def _modules() -> Iterator[Path]:
    for entry in SCANNED:
        path = ROOT / entry
        if path.is_file():
            yield path
        else:
            yield from sorted(path.rglob("*.py"))


@dataclass(frozen=True)
class Found:
    use: Use
    contexts: tuple[tuple[ast.expr, ...], ...]  # guard lists of the call paths into its function


def scan(paths: list[Path] | None = None) -> list[Found]:
    """Every TensorRT use in our modules (or in ``paths``), with the guard lists it runs under."""
    found = []
    for path in paths or list(_modules()):
        if "tensorrt" not in path.read_text():
            continue
        scanner = ModuleScanner(path)
        for use in scanner.scan():
            top = use.function.split(".")
            qual = ".".join(top[:2]) if ".".join(top[:2]) in scanner.functions else top[0]
            found.append(Found(use, tuple(scanner.contexts(qual))))
    return found


# ---------------------------------------------------------------- when a use is needed

@cache
def plans(version: str) -> tuple:
    """Every build ``plan_build`` accepts for ``version`` over a grid of options (all run files present)."""
    from edge_resnet.export.build_plan import CALIB_CACHE, ONNX_FILES, BuildOptions, plan_build

    from edge_resnet.errors import EdgeResNetError

    files = {*ONNX_FILES.values(), CALIB_CACHE}
    out = []
    for precision, dla, implicit, opt_level, workspace, timing in itertools.product(
            ("int8", "fp16", "fp32"), (None, 0), (False, True), (None, 3), (None, 64), ("timing.cache", None)):
        try:
            out.append(plan_build(version, BuildOptions(precision=precision, dla_core=dla, implicit=implicit,
                                                        opt_level=opt_level, workspace_mib=workspace,
                                                        timing_cache=timing), files))
        except EdgeResNetError:
            continue
    return tuple(out)


def _holds(guard: ast.expr, env: dict) -> bool:
    try:
        code = compile(ast.fix_missing_locations(ast.Expression(guard)), "<guard>", "eval")
        return bool(eval(code, {"__builtins__": {}}, env))  # noqa: S307
    except Exception:  # noqa: BLE001 - a test about something other than the plan: it may hold
        return True


def needed(found: Found, version: str) -> bool:
    """Whether some build that ``version`` supports runs this use."""
    table = tables()[version]
    use = found.use
    if use.kind == "probe":  # getattr(trt, "X", None): the code copes with either answer
        return False
    if use.requires is not None and not table.has(use.requires):
        return False
    supported = plans(version)
    if not supported:
        return False
    optional_env = {var: (object() if table.has(cls) else None) for var, cls in use.optional.items()}
    for ctx in found.contexts:
        guards = ctx + use.guards
        for plan in supported:
            if all(_holds(g, {**optional_env, "plan": plan}) for g in guards):
                return True
    return False


def present(found: Found, version: str) -> bool | None:
    """Whether ``version`` has the name (keywords: the argument; None where the table cannot tell)."""
    table = tables()[version]
    use = found.use
    if use.kind == "keyword":
        name, kw = re.fullmatch(r"(.+)\((\w+)=\)", use.name).groups()
        cls, member = name.split(".", 1)
        m = table.member(cls, member)
        if m is None:
            return False
        if not m.args:
            return None  # a table parsed from source: names only
        return any(kw in args for args in m.args)
    if use.kind == "dynamic":
        return None
    return table.has(use.name)


# ---------------------------------------------------------------- the conformance table

def conformance(found: list[Found] | None = None) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(versions, rows): one row per name, cells "ok" (needed, present), "MISSING" (needed, absent),
    "-" (not needed here, present), "absent" (not needed, absent), "?" (the table cannot tell)."""
    found = scan() if found is None else found
    versions = list(tables())
    rows: dict[str, list[str]] = {}
    for item in found:
        if item.use.kind == "dynamic":
            continue
        label = item.use.label()
        cells = rows.setdefault(label, ["absent"] * len(versions))
        for i, v in enumerate(versions):
            has, need = present(item, v), needed(item, v)
            cell = "?" if has is None else ("ok" if has else "MISSING") if need else ("-" if has else "absent")
            order = ["absent", "-", "?", "ok", "MISSING"]
            if order.index(cell) > order.index(cells[i]):
                cells[i] = cell
    return versions, sorted(rows.items())


def render(versions: list[str], rows: list[tuple[str, list[str]]]) -> str:
    origins = "\n".join(f"- {v}: {tables()[v].origin}" for v in versions)
    head = ("# TensorRT API conformance\n\n"
            "Written by `python -m tests.export.tensorrt_api --write`; `tests/export/test_tensorrt_api.py` fails "
            "when it is out of date.\nEvery TensorRT name our modules use (found by reading them), against the "
            "real bindings of each version.\n`ok`: a build of that version uses it and the bindings have it; "
            "`-`: no build of that version reaches it (present anyway); `absent`: not reached and not there; "
            "`?`: the table has names only (no signatures).\n\nName tables:\n" + origins + "\n\n")
    table = ["| name | " + " | ".join(versions) + " |", "|---|" + "---|" * len(versions)]
    table += [f"| `{label}` | " + " | ".join(cells) + " |" for label, cells in rows]
    return head + "\n".join(table) + "\n"


def main(argv: list[str]) -> int:
    text = render(*conformance())
    if "--write" in argv:
        CONFORMANCE.write_text(text)
        print(f"wrote {CONFORMANCE.relative_to(ROOT)}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
