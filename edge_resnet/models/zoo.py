"""The architectures of the paper, registered by name.

ImageNet (Table 1): ResNet-18/34 (basic blocks), 50/101/152 (bottlenecks).
CIFAR (section 4.2): 6n+2 layers, three stages of n basic blocks with 16/32/64 channels.
Every depth also has its plain counterpart (``plain18``, ``plain56``...). ``resnet8``/``plain8``
(n=1) are not in the paper; they exist as tiny models for tests and quick experiments.
"""

from __future__ import annotations

import functools

from edge_resnet.models.blocks import BasicBlock, Bottleneck, Shortcut
from edge_resnet.models.registry import ModelSpec, register
from edge_resnet.models.resnet import ResNet

IMAGENET_LAYERS: dict[int, tuple[type[BasicBlock | Bottleneck], tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
CIFAR_DEPTHS = (8, 20, 32, 44, 56, 110)


def imagenet_resnet(
    depth: int, *, num_classes: int = 1000, shortcut: Shortcut = "B", residual: bool = True
) -> ResNet:
    block, layers = IMAGENET_LAYERS[depth]
    return ResNet(
        block, layers, widths=(64, 128, 256, 512), stem="imagenet",
        num_classes=num_classes, shortcut=shortcut, residual=residual,
    )


def cifar_resnet(
    depth: int, *, num_classes: int = 10, shortcut: Shortcut = "B", residual: bool = True
) -> ResNet:
    if (depth - 2) % 6 != 0 or depth < 8:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
    n = (depth - 2) // 6
    return ResNet(
        BasicBlock, (n, n, n), widths=(16, 32, 64), stem="cifar",
        num_classes=num_classes, shortcut=shortcut, residual=residual,
    )


def _register_all() -> None:
    families = (("imagenet", tuple(IMAGENET_LAYERS), imagenet_resnet, 224),
                ("cifar", CIFAR_DEPTHS, cifar_resnet, 32))
    for family, depths, build, size in families:
        for residual, prefix in ((True, "resnet"), (False, "plain")):
            for depth in depths:
                register(ModelSpec(
                    name=f"{prefix}{depth}", family=family, depth=depth, residual=residual,
                    input_size=size, builder=functools.partial(build, depth, residual=residual),
                ))


_register_all()
