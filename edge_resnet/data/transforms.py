"""torchvision transforms built from a PreprocessSpec, for evaluation and for training."""

from __future__ import annotations

from typing import Literal

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from edge_resnet.data.preprocessing import PreprocessSpec

Augment = Literal["cifar", "imagenet", "none"]
AUGMENTS: tuple[str, ...] = ("cifar", "imagenet", "none")


class _ToBGR(torch.nn.Module):
    """Reverse the channel axis of a CHW tensor (a module, so DataLoader workers can pickle it)."""

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return t.flip(0)


def _tail(spec: PreprocessSpec) -> list[T.Transform]:
    steps: list[T.Transform] = [T.ToImage(), T.ToDtype(torch.float32, scale=True)]
    if spec.channel_order == "BGR":
        steps.append(_ToBGR())
    # mean/std are given in channel_order, so they apply after any reordering
    steps.append(T.Normalize(mean=list(spec.mean), std=list(spec.std)))
    return steps


def eval_transform(spec: PreprocessSpec) -> T.Compose:
    """The deterministic transform the spec describes (PIL image in, CHW float tensor out)."""
    interp = InterpolationMode(spec.interpolation)
    return T.Compose([
        T.Resize(spec.resize, interpolation=interp, antialias=True),
        T.CenterCrop(spec.input_size),
        *_tail(spec),
    ])


def train_transform(spec: PreprocessSpec, augment: Augment, hflip: bool) -> T.Compose:
    """Training augmentation of the paper, ending in the same normalisation as ``eval_transform``.

    "cifar": resize/crop as evaluation, then 4-pixel zero padding and a random crop (section 4.2).
    "imagenet": a random-resized crop (scale 0.08-1), the torchvision recipe.
    """
    interp = InterpolationMode(spec.interpolation)
    if augment == "imagenet":
        steps: list[T.Transform] = [T.RandomResizedCrop(spec.input_size, interpolation=interp, antialias=True)]
    else:
        steps = [T.Resize(spec.resize, interpolation=interp, antialias=True), T.CenterCrop(spec.input_size)]
        if augment == "cifar":
            steps.append(T.RandomCrop(spec.input_size, padding=4))
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose([*steps, *_tail(spec)])
