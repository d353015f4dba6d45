"""Python 3.8 (JetPack 5) for everything the torch-free install can import, checked statically.

No 3.8 interpreter can be installed here, so two checks stand in for one: vermin (the standard library's
API by version, syntax) and tests/py38_runtime.py (what Python evaluates at run time that vermin reads as
something else: ``str | None`` in an alias, ``list[int]`` in a cast). Each is trusted only because the
planted cases below fail it; the tree then has to pass both.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.import_graph import ROOT, project, torch_free
from tests.py38_runtime import check_source

# the TensorRT tests run on the Jetson, on its Python, without torch (tests/export/test_torch_free.py)
DEVICE_TESTS = ["tests/conftest.py", "tests/export/conftest.py", "tests/export/util.py",
                "tests/export/test_tensorrt_engine.py"]

# (source, the finding's words): each fails on Python 3.8 at import or when the line runs
PLANTED = {
    "alias union": ("A = str | int\n", "type union"),
    "abc callable, imported by name": ("from collections.abc import Callable\nB = Callable[[int], None]\n",
                                       "collections.abc.Callable[...]"),
    "abc callable, dotted": ("import collections.abc\nC = collections.abc.Callable[[int], None]\n",
                             "collections.abc.Callable[...]"),
    "abc through `from collections import abc`": ("from collections import abc\nC = abc.Sequence[int]\n",
                                                  "collections.abc.Sequence[...]"),
    "abc under another name": ("from collections.abc import Mapping as M\nC = M[str, int]\n",
                               "collections.abc.Mapping[...]"),
    "builtin generic": ("D = list[int]\n", "list[...]"),
    "generic inside a typing generic": ("from typing import Optional\nE = Optional[tuple[int, int]]\n",
                                        "tuple[...]"),
    "union with None": ("from pathlib import Path\nF = Path | None\n", "type union"),
    "isinstance": ("def f(x):\n    return isinstance(x, int | str)\n", "type union"),
    "cast": ("from typing import cast\ndef f(x):\n    return cast(dict[str, int], x)\n", "dict[...]"),
    "default value": ("def f(x=type[int]):\n    return x\n", "type[...]"),
    "decorator argument": ("import functools\n@functools.singledispatch\ndef f(x):\n    pass\n"
                           "@f.register(int | str)\ndef _(x):\n    pass\n", "type union"),
    "class body": ("class K:\n    T = frozenset[int]\n", "frozenset[...]"),
    "annotation without the future import": ("def f(x: int | None) -> None:\n    pass\n", "type union"),
    "class annotation without the future import": ("class K:\n    x: list[int] = []\n", "list[...]"),
    "module annotation without the future import": ("x: set[int] = set()\n", "set[...]"),
    "stdlib generic": ("import contextlib\nP = contextlib.AbstractContextManager[int]\n",
                       "contextlib.AbstractContextManager[...]"),
    "re.Pattern": ("import re\nP = re.Pattern[str]\n", "re.Pattern[...]"),
    "os.PathLike": ("import os\nP = os.PathLike[str]\n", "os.PathLike[...]"),
    "deque": ("from collections import deque\nQ = deque[int]\n", "collections.deque[...]"),
    "dict union": ("def f(a):\n    return {'x': 1} | a\n", "dict union"),
    "removeprefix on an untyped receiver": ("def f(s):\n    return s.removeprefix('a')\n", "removeprefix"),
    "zip strict": ("def f(a, b):\n    return list(zip(a, b, strict=True))\n", "zip(strict=)"),
    "get_type_hints": ("import typing\ndef f(c):\n    return typing.get_type_hints(c)\n", "get_type_hints"),
    "TYPE_CHECKING else branch runs": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    pass\n"
                                       "else:\n    X = list[int]\n", "list[...]"),
}

# never evaluated, or evaluated and fine on 3.8
ALLOWED = {
    "deferred annotations": "from __future__ import annotations\nfrom collections.abc import Callable\n"
                            "def f(x: int | None, g: Callable[[int], None]) -> list[int]:\n    y: dict[str, int] = {}\n"
                            "class K:\n    x: tuple[int, ...] = ()\n",
    "local annotation": "def f():\n    y: list[int] = []\n    return y\n",
    "string annotation": "def f(x: 'int | None') -> 'list[int]':\n    pass\n",
    "string forward reference": "from typing import Callable\nP = Callable[[int], 'list[int]']\n",
    "TYPE_CHECKING": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    A = str | int\n",
    "typing generics": "from typing import Callable, Dict, Optional, Tuple, Union\n"
                       "P = Union[str, Tuple[str, Dict[str, int]]]\nQ = Optional[Callable[[int], None]]\n",
    "integer or": "def f(a, b):\n    return a | b | 4\n",
    "flags": "import re\nFLAGS = re.I | re.M\n",
    "array elements": "def f(m):\n    return m[0] | m[1]\n",
    "a local named like a builtin is indexed": "def f(list):\n    return list[0]\n",
    "set union": "def f(a):\n    return {1, 2} | a\n",
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_the_run_time_check_finds_each_planted_construct(name: str) -> None:
    source, words = PLANTED[name]
    found = check_source(source, name)
    assert found and any(words in f.what for f in found), (source, found)


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_the_run_time_check_leaves_what_3_8_accepts(name: str) -> None:
    assert check_source(ALLOWED[name], name) == []


def _device_files() -> list[Path]:
    modules = project()
    return sorted(modules[m].path for m in torch_free()) + [ROOT / f for f in DEVICE_TESTS]


def test_the_torch_free_modules_cover_the_device() -> None:
    """The set checked here holds every module the device commands reach, so nothing escapes the check."""
    free = torch_free()
    for name in ("cli", "edge_resnet.cli.device", "edge_resnet.runtime.backends", "edge_resnet.runtime.camera",
                 "edge_resnet.ptq.job", "edge_resnet.deploy.device", "edge_resnet.bench.benchmark",
                 "edge_resnet.export.lint", "edge_resnet.calibration.onnx_collect", "edge_resnet.contract.files"):
        assert name in free, name
    assert "edge_resnet.pipeline" not in free and "edge_resnet.training.loop" not in free


def test_nothing_in_the_device_closure_fails_on_python_3_8_at_run_time() -> None:
    findings = [str(f) for p in _device_files() for f in check_source(p.read_text(encoding="utf-8"), str(p))]
    assert not findings, "\n".join(findings)


def _vermin() -> str:
    found = shutil.which("vermin", path=str(Path(sys.executable).parent)) or shutil.which("vermin")
    assert found, "vermin is part of the dev extra"
    return found


def _vermin_run(files: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_vermin(), "--no-tips", "--violations", "-t=3.8-", "--backport", "dataclasses",
                           *map(str, files)], capture_output=True, text=True, timeout=300)


def test_vermin_finds_newer_standard_library_api(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("import functools\n@functools.cache\ndef f():\n    return 'ab'.removeprefix('a')\n"
                       "import tomllib\n")
    done = _vermin_run([planted])
    assert done.returncode != 0
    for words in ("functools.cache", "tomllib"):
        assert words in done.stdout, done.stdout


def test_vermin_finds_nothing_newer_than_3_8_in_the_device_closure() -> None:
    done = _vermin_run(_device_files())
    assert done.returncode == 0, done.stdout[-4000:]
