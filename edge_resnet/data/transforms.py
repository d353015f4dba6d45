"""torchvision transforms built from a PreprocessSpec, for evaluation and for training."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import RandomResizedCrop as _RandomResizedCropV1
from torchvision.transforms import v2 as T

from edge_resnet.contract.preprocess import PreprocessSpec
from edge_resnet.imaging import import_cv2, opencv_resize, resized_size, to_rgb

Augment = Literal["cifar", "imagenet", "none"]


class _ToBGR(torch.nn.Module):
    """Reverse the channel axis of a CHW tensor (a module, so DataLoader workers can pickle it)."""

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return t.flip(0)


class OpenCVResize(torch.nn.Module):
    """``T.Resize(size)`` on an RGB PIL image, computed by ``edge_resnet.imaging.opencv_resize``: the
    resize a spec with ``resampler="opencv"`` asks for, the very function the runtime calls."""

    def __init__(self, size: int) -> None:
        super().__init__()
        import_cv2()  # fail when the transform is built, not in a DataLoader worker
        self.size = size

    def forward(self, img: Image.Image) -> Image.Image:
        h, w = resized_size(img.height, img.width, self.size)
        if (h, w) == (img.height, img.width):
            return img
        return Image.fromarray(opencv_resize(np.asarray(to_rgb(img)), h, w))


class OpenCVRandomResizedCrop(torch.nn.Module):
    """``T.RandomResizedCrop(size)`` (the same random window, torchvision's own sampler) whose
    resize is ``opencv_resize``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        import_cv2()
        self.size = size
        self.scale, self.ratio = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)

    def forward(self, img: Image.Image) -> Image.Image:
        top, left, h, w = _RandomResizedCropV1.get_params(img, self.scale, self.ratio)
        window = np.asarray(to_rgb(img))[top:top + h, left:left + w]
        return Image.fromarray(opencv_resize(window, self.size, self.size))


def _resize(spec: PreprocessSpec) -> T.Transform | torch.nn.Module:
    """Shorter side to ``spec.resize`` with the spec's resampler."""
    if spec.resampler == "opencv":
        return OpenCVResize(spec.resize)
    return T.Resize(spec.resize, interpolation=InterpolationMode(spec.interpolation), antialias=True)


def _tail(spec: PreprocessSpec) -> list[T.Transform]:
    steps: list[T.Transform] = [T.ToImage(), T.ToDtype(torch.float32, scale=True)]
    if spec.channel_order == "BGR":
        steps.append(_ToBGR())
    # mean/std are given in channel_order, so they apply after any reordering
    steps.append(T.Normalize(mean=list(spec.mean), std=list(spec.std)))
    return steps


def eval_transform(spec: PreprocessSpec) -> T.Compose:
    """The deterministic transform the spec describes (PIL image in, CHW float tensor out)."""
    return T.Compose([_resize(spec), T.CenterCrop(spec.input_size), *_tail(spec)])


def train_transform(spec: PreprocessSpec, augment: Augment, hflip: bool) -> T.Compose:
    """Training augmentation of the paper, ending in the same normalisation as ``eval_transform``.

    "cifar": resize/crop as evaluation, then 4-pixel zero padding and a random crop (section 4.2).
    "imagenet": a random-resized crop (scale 0.08-1), the torchvision recipe.
    Every resize uses the spec's resampler, so training sees the resize the device will do.
    """
    steps: list[T.Transform | torch.nn.Module]
    if augment == "imagenet" and spec.resampler == "opencv":
        steps = [OpenCVRandomResizedCrop(spec.input_size)]
    elif augment == "imagenet":
        interp = InterpolationMode(spec.interpolation)
        steps = [T.RandomResizedCrop(spec.input_size, interpolation=interp, antialias=True)]
    else:
        steps = [_resize(spec), T.CenterCrop(spec.input_size)]
        if augment == "cifar":
            steps.append(T.RandomCrop(spec.input_size, padding=4))
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose([*steps, *_tail(spec)])
