"""The preprocessing spec: how an image becomes the network's input tensor.

It is data, saved in every checkpoint and manifest, so training, evaluation, export and the
torch-free runtime all apply exactly the same transform (and validate it here, once): decode to RGB, resize the shorter
side to ``resize`` (with ``resampler``: PIL antialiased, or OpenCV's cheaper unantialiased
resize), center-crop ``input_size``, scale to [0, 1], subtract ``mean`` and divide by ``std`` per
channel, lay out as NCHW.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from edge_resnet.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
CHANNEL_ORDERS = ("RGB", "BGR")
# how the resize is computed (edge_resnet.imaging implements both):
#   "pil": PIL's Image.resize, antialiased (what torchvision's Resize does to PIL images)
#   "opencv": cv2.resize, bilinear without antialiasing: ~10x cheaper on camera frames
RESAMPLERS = ("pil", "opencv")
OPENCV_BILINEAR_ONLY = ("resampler 'opencv' resizes bilinearly only (the one OpenCV filter that gives the same "
                        "bytes across OpenCV versions and CPUs), got interpolation {!r}; use interpolation "
                        "'bilinear' or resampler 'pil'")


@dataclass(frozen=True)
class PreprocessSpec:
    # side of the square the network sees (after the center crop)
    input_size: int
    # the shorter image side is resized to this before cropping (== input_size: no crop margin)
    resize: int
    # per-channel statistics, in channel_order, applied to pixels scaled to [0, 1]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # resampling filter used by the resize
    interpolation: str = "bilinear"
    # order of the three input channels the network expects
    channel_order: str = "RGB"
    # memory layout of the input tensor (NCHW only, for now)
    layout: str = "NCHW"
    # which library resizes (RESAMPLERS): "pil" is torchvision's antialiased
    # resize; "opencv" (cv2.resize INTER_LINEAR, no antialiasing; bilinear only) costs ~10x less
    # per camera frame
    resampler: str = "pil"

    def __post_init__(self) -> None:
        if self.input_size < 1 or self.resize < self.input_size:
            raise ConfigError(
                f"preprocessing needs 1 <= input_size <= resize, got input_size={self.input_size} "
                f"resize={self.resize}"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation {self.interpolation!r} is not one of {INTERPOLATIONS}")
        if self.resampler not in RESAMPLERS:
            raise ConfigError(f"resampler {self.resampler!r} is not one of {RESAMPLERS}")
        if self.resampler == "opencv" and self.interpolation != "bilinear":
            raise ConfigError(OPENCV_BILINEAR_ONLY.format(self.interpolation))
        if self.channel_order not in CHANNEL_ORDERS or self.layout != "NCHW":
            raise ConfigError(f"unsupported channel order/layout {self.channel_order}/{self.layout}; "
                              "use RGB or BGR, NCHW")
        values = (*self.mean, *self.std)
        if len(self.mean) != 3 or len(self.std) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values) or min(self.std) <= 0:
            raise ConfigError(f"mean and std need three values with std > 0, got {self.mean} {self.std}")

    @classmethod
    def imagenet(cls, input_size: int = 224) -> PreprocessSpec:
        """torchvision's ImageNet evaluation transform (resize 256, crop 224) scaled to ``input_size``."""
        return cls(input_size=input_size, resize=round(input_size * 256 / 224))

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data; ``resampler`` only when it is not the default "pil", so specs
        that use PIL stay readable by runtimes that predate the field."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        if self.resampler == "pil":
            del d["resampler"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:  # a newer export that adds a step must not run with preprocessing that skips it
            raise ConfigError(f"preprocessing spec has fields {sorted(unknown)} this edge-resnet does not know; "
                              "use the edge-resnet version that exported the model")
        d = dict(d)
        try:
            for key in ("mean", "std"):
                if key in d:
                    d[key] = tuple(float(v) for v in d[key])
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"preprocessing spec has a malformed value ({e})") from None
