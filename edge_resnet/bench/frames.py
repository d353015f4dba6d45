"""The frames a benchmark preprocesses: decoded once, then fed to the timed loop from memory.

Decoding is not part of what is measured (a camera delivers decoded frames); resizing, cropping
and normalising them is (the runtime's ``Preprocessor``), so the frames should be what the
device will see: ``--frames`` a folder of photographs, one image or a video file. Without it,
the bundled handwritten digits (8x8, what the default run was trained on) are used; their
preprocessing costs far less than a 640x480 camera frame's, and the result says which frames ran.
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

import edge_resnet
from edge_resnet.errors import EdgeResNetError
from edge_resnet.imaging import to_rgb

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
MAX_FRAMES = 32


@dataclass(frozen=True)
class Frames:
    """Decoded uint8 frames (H, W, 3) in ``order`` and where they came from."""

    images: tuple[np.ndarray, ...]
    order: str  # "RGB", or "BGR" for video frames (as OpenCV and the camera app deliver them)
    source: str

    def batch(self, size: int, start: int) -> list[np.ndarray]:
        """``size`` frames from position ``start`` on, cycling: successive batches use different frames."""
        n = len(self.images)
        return [self.images[(start + i) % n] for i in range(size)]

    def describe(self) -> dict[str, Any]:
        sizes = sorted({f"{f.shape[1]}x{f.shape[0]}" for f in self.images})
        return {"source": self.source, "count": len(self.images), "sizes": sizes, "order": self.order}


def check_frames_source(source: str | Path | None) -> None:
    """Fail early (before anything runs) on a ``--frames`` path that cannot be read."""
    if source is None:
        return
    path = Path(source)
    if not path.exists():
        raise EdgeResNetError(f"--frames {path} does not exist; pass a folder of images, an image or a video file")
    if path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
        raise EdgeResNetError(f"--frames {path} is neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a video "
                              f"({', '.join(VIDEO_SUFFIXES)}) file")


def load_frames(source: str | Path | None, limit: int = MAX_FRAMES) -> Frames:
    """Up to ``limit`` frames from a folder of images (searched recursively, sorted), one image,
    a video file (needs OpenCV), or with None the bundled digits.

    Raises:
        EdgeResNetError: the path is missing, holds no readable image, or is a video without OpenCV.
    """
    check_frames_source(source)
    if source is None:
        return Frames(_digits(limit), "RGB", f"bundled digits (first {limit} images, 8x8 grey as RGB)")
    path = Path(source)
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        return Frames(_video(path, limit), "BGR", f"video {path}")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    images = []
    for f in files:
        if len(images) == limit:
            break
        try:
            with Image.open(f) as img:
                images.append(np.asarray(to_rgb(img)))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            log.warning("skipping unreadable image %s (%s)", f, e)
    if not images:
        raise EdgeResNetError(f"--frames {path} holds no readable image ({', '.join(IMAGE_SUFFIXES)})")
    return Frames(tuple(images), "RGB", f"images from {path}")


def _video(path: Path, limit: int) -> tuple[np.ndarray, ...]:
    try:
        import cv2
    except ImportError:
        raise EdgeResNetError("reading video frames needs OpenCV: pip install -e '.[video]' "
                              "(on a Jetson, JetPack's own python3-opencv)") from None
    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while len(frames) < limit:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise EdgeResNetError(f"--frames {path}: OpenCV read no frame from this video")
    return tuple(frames)


def _digits(limit: int) -> tuple[np.ndarray, ...]:
    # the asset edge_resnet.data.digits reads; read here directly because importing
    # edge_resnet.data imports torch, and the benchmark must run where torch is absent
    raw = (Path(edge_resnet.__file__).parent / "data" / "assets" / "digits.csv.gz").read_bytes()
    lines = gzip.decompress(raw).decode().splitlines()[:limit]
    table = np.loadtxt(lines, delimiter=",", dtype=np.int64)
    grey = np.rint(table[:, :64].reshape(-1, 8, 8) * (255 / 16)).astype(np.uint8)
    return tuple(np.repeat(g[..., None], 3, axis=-1) for g in grey)
