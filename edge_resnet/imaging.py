"""Image operations shared by the training data and the torch-free runtime (PIL, numpy and OpenCV; no torch).

Both sides call these same functions, so a preprocessing spec means one thing everywhere: the
output size of a resize, and the OpenCV resize a spec with ``resampler="opencv"`` asks for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edge_resnet.errors import ConfigError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def find_images(root: Path) -> list[Path]:
    """Every image file under ``root`` (recursively), sorted."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def open_rgb(path: str | Path) -> Image.Image:
    with Image.open(path) as img:
        img.load()
        return to_rgb(img)


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


def opencv_resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """RGB or BGR ``pixels`` (H, W, 3) uint8 resized to (height, width) by cv2.resize's INTER_LINEAR
    (2x2 taps, no antialiasing, fixed-point).

    The one OpenCV filter a spec may use: it gave the same bytes across OpenCV 4.8-5.0 and with
    OpenCV's SIMD and IPP paths on or off, where INTER_NEAREST_EXACT changed between versions and
    INTER_CUBIC with the SIMD path. Always three channels: OpenCV may route 1- and 4-channel
    images through other code (and does for bicubic), so callers make grey and RGBA frames RGB
    first. Channels are resized alike, so RGB and BGR give the same bytes per channel.
    """
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"opencv_resize takes (H, W, 3) pixels, got shape {pixels.shape}")
    cv2 = import_cv2()
    if (height, width) == pixels.shape[:2]:
        return pixels  # torchvision skips a resize to the same size; so does the PIL path
    return cv2.resize(np.ascontiguousarray(pixels), (width, height), interpolation=cv2.INTER_LINEAR)


def opencv_worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: OpenCV's own thread pool at one thread in each worker, so N
    workers resizing do not each spread over every core."""
    try:
        import cv2
    except ImportError:
        return
    cv2.setNumThreads(1)
