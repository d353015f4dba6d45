"""Residual and plain building blocks of He et al. (2015).

Every block keeps its ReLUs and its residual add as modules of their own, and can name its
(conv, bn) pairs, so BatchNorm folding and quantization need no module surgery later on.
Attribute names follow torchvision (``conv1``/``bn1``/..., ``downsample.0``/``downsample.1``)
so torchvision state dicts load unchanged.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

Shortcut = Literal["A", "B", "C"]
SHORTCUTS: tuple[str, ...] = ("A", "B", "C")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class Add(nn.Module):
    """The residual addition as a module, so a quantizer can observe and replace it."""

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return x + y


class ZeroPadShortcut(nn.Module):
    """Option A: a parameter-free shortcut that subsamples by striding and zero-pads new channels."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        if out_planes < in_planes:
            raise ValueError(f"option A cannot shrink channels ({in_planes} -> {out_planes})")
        self.extra = out_planes - in_planes
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # The padded channels are identically zero: the shortcut adds no parameters.
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))

    def extra_repr(self) -> str:
        return f"extra_channels={self.extra}, stride={self.stride}"


def make_shortcut(
    shortcut: Shortcut | None, in_planes: int, out_planes: int, stride: int
) -> nn.Module | None:
    """The block's shortcut; ``None`` means identity (or, for ``shortcut=None``, no shortcut is built)."""
    if shortcut is None:
        return None
    shape_changes = stride != 1 or in_planes != out_planes
    if shortcut == "A":
        return ZeroPadShortcut(in_planes, out_planes, stride) if shape_changes else None
    if shortcut == "B" and not shape_changes:
        return None
    # B where the shape changes, and C everywhere: a 1x1 projection W_s with its BN.
    return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))


class _Block(nn.Module):
    """What both blocks share: the shortcut decision and the list of (conv, bn) pairs."""

    expansion = 1
    n_convs = 2

    def _init_shortcut(self, shortcut: Shortcut | None, in_planes: int, out_planes: int, stride: int) -> None:
        # residual=False (shortcut None) is the paper's "plain" network: same layers, no shortcut.
        self.residual = shortcut is not None
        self.downsample = make_shortcut(shortcut, in_planes, out_planes, stride)
        self.add = Add() if self.residual else None

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        """Names, relative to the block, of every conv followed by its BatchNorm."""
        pairs = [(f"conv{i}", f"bn{i}") for i in range(1, self.n_convs + 1)]
        if isinstance(self.downsample, nn.Sequential):
            pairs.append(("downsample.0", "downsample.1"))
        return pairs

    def _merge(self, out: Tensor, x: Tensor) -> Tensor:
        if not self.residual:
            return out
        identity = x if self.downsample is None else self.downsample(x)
        return self.add(out, identity)


class BasicBlock(_Block):
    """Two 3x3 convolutions (ResNet-18/34 and the CIFAR nets)."""

    expansion = 1
    n_convs = 2

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: Shortcut | None = "B") -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self._init_shortcut(shortcut, in_planes, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = self._merge(out, x)
        return self.relu2(out)


class Bottleneck(_Block):
    """1x1 reduce, 3x3, 1x1 expand (ResNet-50/101/152).

    The stride sits in the 3x3 conv ("ResNet V1.5", as in torchvision) rather than in the first
    1x1 as in the paper: it keeps torchvision's weights and logits, and is slightly more accurate.
    """

    expansion = 4
    n_convs = 3

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: Shortcut | None = "B") -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = conv1x1(planes, out_planes)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu3 = nn.ReLU(inplace=True)
        self._init_shortcut(shortcut, in_planes, out_planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = self._merge(out, x)
        return self.relu3(out)
