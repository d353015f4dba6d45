"""The ResNet network: a stem, stages of blocks, global average pooling, a linear classifier.

Two stems from the paper: the ImageNet one (7x7/2 conv + 3x3/2 max pool, four stages of
64/128/256/512 channels, section 3.4) and the CIFAR one (3x3 conv, three stages of 16/32/64
channels, section 4.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from edge_resnet.models.blocks import SHORTCUTS, BasicBlock, Bottleneck, Shortcut

Stem = Literal["imagenet", "cifar"]


class ResNet(nn.Module):
    """A residual (or, with ``residual=False``, plain) network.

    Args:
        block: BasicBlock or Bottleneck.
        layers: blocks per stage.
        widths: base channel count per stage (the block's ``planes``).
        stem: "imagenet" or "cifar".
        num_classes: size of the classifier head.
        shortcut: paper option A, B or C (ignored when ``residual`` is False).
        residual: False builds the paper's plain counterpart.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        *,
        widths: Sequence[int],
        stem: Stem,
        num_classes: int,
        shortcut: Shortcut = "B",
        residual: bool = True,
    ) -> None:
        super().__init__()
        if len(layers) != len(widths):
            raise ValueError(f"layers {list(layers)} and widths {list(widths)} differ in length")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        in_planes = widths[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, in_planes, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(3, in_planes, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)

        self.stage_names: list[str] = []
        block_shortcut = shortcut if residual else None
        for i, (n_blocks, planes) in enumerate(zip(layers, widths, strict=True)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n_blocks):
                blocks.append(block(in_planes, planes, stride if j == 0 else 1, block_shortcut))
                in_planes = planes * block.expansion
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_planes, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.forward_features(x))
        return self.fc(torch.flatten(x, 1))

    def blocks(self) -> list[tuple[str, BasicBlock | Bottleneck]]:
        """Every block with its qualified name, in execution order."""
        return [
            (f"{stage}.{i}", blk)
            for stage in self.stage_names
            for i, blk in enumerate(getattr(self, stage))
        ]

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        """Qualified names of every (conv, BatchNorm) pair, stem first, in execution order."""
        pairs = [("conv1", "bn1")]
        for prefix, blk in self.blocks():
            pairs += [(f"{prefix}.{c}", f"{prefix}.{b}") for c, b in blk.conv_bn_pairs()]
        return pairs

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised one for ``num_classes`` classes."""
        self.fc = nn.Linear(self.fc.in_features, num_classes)
        self.num_classes = num_classes
