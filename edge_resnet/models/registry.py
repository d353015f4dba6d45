"""Name -> architecture registry. Entries are plain frozen dataclasses; builders live in ``zoo``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

from edge_resnet.errors import ModelError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    # "imagenet" (224x224 inputs, 4 stages) or "cifar" (32x32 inputs, 3 stages)
    family: Literal["imagenet", "cifar"]
    depth: int
    # False for the paper's plain counterpart (same layers, no shortcuts)
    residual: bool
    # the input side length FLOPs are counted at and the default preprocessing crops to
    input_size: int
    builder: Callable[..., nn.Module]


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; an unknown name raises ModelError listing the valid ones."""
    _ensure_zoo()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelError(
            f"unknown model {name!r}; choose one of: {', '.join(list_models())}"
        ) from None


def list_models() -> list[str]:
    _ensure_zoo()
    return list(_REGISTRY)


def _ensure_zoo() -> None:
    # The zoo registers itself on import; importing it here keeps the registry usable on its own.
    from edge_resnet.models import zoo  # noqa: F401
