"""Lazy package exports: ``from edge_resnet.training import train`` works, but importing one
submodule (``edge_resnet.training.config``) does not import its siblings.

Without it a package ``__init__`` that re-exports its submodules makes every submodule import pay
for all of them: the torch-free TrainConfig would import torch through the training loop, and
``edge-resnet camera --help`` would load PyTorch before printing anything.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any, Dict, List


class _LazyPackage(types.ModuleType):
    """A package module whose exported names resolve on first use."""

    _exports: Dict[str, str]

    def __getattr__(self, name: str) -> Any:
        module = self.__dict__["_exports"].get(name)
        if module is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{self.__name__}.{module}"), name)
        self.__dict__[name] = value  # later lookups skip __getattr__
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        # Importing submodule ``evaluate`` binds it on the package; the exported function of that name
        # must win, as it did when the package imported everything eagerly.
        if isinstance(value, types.ModuleType) and name in self.__dict__["_exports"] \
                and value.__name__ == f"{self.__name__}.{name}":
            return
        super().__setattr__(name, value)

    def __dir__(self) -> List[str]:
        return sorted(set(self.__dict__) | set(self.__dict__["_exports"]))


def lazy_exports(package: str, exports: Dict[str, str]) -> None:
    """Make ``package`` resolve each name of ``exports`` (name -> submodule) on first use.

    Call it at the end of the package's ``__init__``: ``lazy_exports(__name__, _EXPORTS)``.
    """
    module = sys.modules[package]
    module.__dict__["_exports"] = dict(exports)
    module.__class__ = _LazyPackage
