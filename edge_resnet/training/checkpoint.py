"""Our checkpoint: weights plus everything needed to rebuild and feed the model.

A plain dict of tensors, strings and numbers, so ``torch.load(weights_only=True)`` reads it:
``format``, ``arch``, ``shortcut``, ``num_classes``, ``classes``, ``preprocessing`` (the spec
as a dict), ``state_dict``, and for ``last.pt`` the training state used by ``--resume``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_resnet import atomic
from edge_resnet.contract.preprocess import PreprocessSpec
from edge_resnet.errors import CheckpointError, ConfigError
from edge_resnet.models import ResNet, create_model, extract_state_dict, load_file, load_weights

FORMAT = "edge-resnet/checkpoint-1"


@dataclass
class Checkpoint:
    arch: str
    shortcut: str
    classes: list[str]
    preprocessing: PreprocessSpec
    state_dict: dict[str, torch.Tensor]
    # anything else stored alongside (epoch, metrics, training state)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def build_model(self) -> ResNet:
        """The model with these weights, in eval mode."""
        model = create_model(self.arch, num_classes=self.num_classes, shortcut=self.shortcut)
        load_weights(model, self.state_dict, source="checkpoint weights")
        return model.eval()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "arch": self.arch, "shortcut": self.shortcut,
            "num_classes": self.num_classes, "classes": list(self.classes),
            "preprocessing": self.preprocessing.to_dict(), "state_dict": self.state_dict,
            "torch_version": str(torch.__version__), **self.extra,
        }


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model under DistributedDataParallel / torch.compile wrappers."""
    return getattr(model, "module", getattr(model, "_orig_mod", model))


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> None:
    """Write atomically: an interrupted save leaves the previous file intact."""
    atomic.save_torch(path, ckpt.to_dict())


def is_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def parse_checkpoint(obj: Any, path: str | Path) -> Checkpoint:
    if not is_checkpoint(obj):
        raise CheckpointError(
            f"{path} is not an edge-resnet checkpoint; to start from foreign weights (torchvision, timm) "
            "pass them with --weights and name the architecture with --model"
        )
    try:
        known = {"format", "arch", "shortcut", "num_classes", "classes", "preprocessing", "state_dict"}
        return Checkpoint(
            arch=obj["arch"], shortcut=obj["shortcut"], classes=[str(c) for c in obj["classes"]],
            preprocessing=PreprocessSpec.from_dict(obj["preprocessing"]),
            state_dict=obj["state_dict"],
            extra={k: v for k, v in obj.items() if k not in known},
        )
    except (KeyError, TypeError, ValueError, ConfigError) as e:
        raise CheckpointError(f"{path} is an incomplete edge-resnet checkpoint ({e}); re-export it") from None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read one of our checkpoints.

    Raises:
        CheckpointError: missing, truncated, unsafe, or not ours.
    """
    return parse_checkpoint(load_file(path), path)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of any supported weights file: ours, torchvision ``.pth``, timm."""
    obj = load_file(path)
    if is_checkpoint(obj):
        return parse_checkpoint(obj, path).state_dict
    return extract_state_dict(obj, source=str(path))
