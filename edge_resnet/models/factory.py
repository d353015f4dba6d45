"""Build a registered model by name, with a validated head size and shortcut option."""

from __future__ import annotations

from edge_resnet.errors import ModelError
from edge_resnet.models.blocks import SHORTCUTS
from edge_resnet.models.registry import get_spec
from edge_resnet.models.resnet import ResNet


def create_model(name: str, *, num_classes: int, shortcut: str = "B") -> ResNet:
    """A freshly initialised model.

    Raises:
        ModelError: unknown name, bad shortcut option or class count.
    """
    spec = get_spec(name)
    shortcut = shortcut.upper()
    if shortcut not in SHORTCUTS:
        raise ModelError(f"unknown shortcut option {shortcut!r}; choose A, B or C (paper section 3.3)")
    if num_classes < 1:
        raise ModelError(f"num_classes must be at least 1, got {num_classes}")
    return spec.builder(num_classes=num_classes, shortcut=shortcut)
