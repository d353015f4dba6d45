"""Image conversions shared by the training data and the torch-free runtime (PIL only, no torch)."""

from __future__ import annotations

from PIL import Image


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
