"""Image operations shared by the training data and the torch-free runtime (PIL, numpy and OpenCV; no torch).

Both sides call these same functions, so a preprocessing spec means one thing everywhere: the
output size of a resize, and the OpenCV resize a spec with ``resampler="opencv"`` asks for.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from edge_resnet.errors import ConfigError

# how a PreprocessSpec's resize is computed:
#   "pil": PIL's Image.resize, antialiased (what torchvision's Resize does to PIL images)
#   "opencv": cv2.resize without antialiasing: ~10x cheaper on camera frames
RESAMPLERS = ("pil", "opencv")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode (grey, palette, RGBA, CMYK, 16-bit) as 8-bit RGB: alpha is dropped, not
    composited; 16/32-bit greys keep their top byte rather than clipping at 255."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode.startswith("I"):
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert("RGB")


def resized_size(height: int, width: int, resize: int) -> tuple[int, int]:
    """(height, width) after torchvision's ``Resize(resize)``: the shorter side becomes ``resize``,
    the longer one ``int(resize * long / short)`` (truncated, not rounded: 300x451 -> 256x384)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = resize, int(resize * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def import_cv2(needed_by: str = "a preprocessing spec with resampler \"opencv\"") -> Any:
    """OpenCV, or a one-line error naming what needs it and how to install it."""
    try:
        import cv2
    except ImportError:
        raise ConfigError(f"{needed_by} needs OpenCV: `pip install -e '.[video]'` (opencv-python-headless), "
                          "or JetPack's own python3-opencv on a Jetson") from None
    return cv2


def opencv_resize(pixels: np.ndarray, height: int, width: int, interpolation: str) -> np.ndarray:
    """``pixels`` (H, W) or (H, W, C) uint8 resized to (height, width) with cv2.resize.

    "bilinear" is INTER_LINEAR (2x2 taps, no antialiasing: fixed-point, the fast path), "bicubic"
    INTER_CUBIC, "nearest" INTER_NEAREST_EXACT (pixel-centre aligned like PIL's, unlike
    INTER_NEAREST). Channels are resized independently, so the channel order does not matter.
    """
    cv2 = import_cv2()
    flag = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST_EXACT}[interpolation]
    if (height, width) == pixels.shape[:2]:
        return pixels  # torchvision skips a resize to the same size; so does the PIL path
    return cv2.resize(np.ascontiguousarray(pixels), (width, height), interpolation=flag)
