"""Calibration and held-out images for ``edge-resnet quantize``, without torch.

Two kinds of source, both preprocessed by the runtime's ``Preprocessor`` (the device's own
arithmetic):

- a folder of images (recursive): a seeded permutation holds out ``num_verify`` images (at most a
  quarter of the folder) for verification, and the next ``num_calib`` calibrate. Images in class
  folders named after the model's labels carry their labels;
- anything the camera app reads (a video file, a camera index, /dev/videoN, csi://N, rtsp://...,
  a GStreamer pipeline), through the camera app's own reader (``edge_resnet.runtime.reader``): a
  file every frame (or paced at its frame rate with ``pace``), a live source its newest frames.
  Every ``every``-th frame read is taken; of those, every fifth goes to verification until it has
  ``num_verify``, the rest calibrate. Verification frames are taken from the same stretch of time as
  the calibration frames, never seen by calibration.

Calibration images are streamed (``calibration()`` is a generator: nothing is stored), held-out
ones are kept as cropped uint8 pixels (``Preprocessor.pixels``), 4x smaller than the input tensors.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_resnet.errors import DataError
from edge_resnet.imaging import IMAGE_EXTENSIONS, find_images, open_rgb
from edge_resnet.runtime.preprocess import Preprocessor

log = logging.getLogger("edge_resnet.ptq")

# every VERIFY_EVERY-th frame taken from a video source is held out (while verification wants more)
VERIFY_EVERY = 5
_DECODE_ERRORS = (OSError, SyntaxError, ValueError)


@dataclass
class HeldOut:
    """The verification images: cropped pixels (N, S, S, 3) uint8, and labels where the source has them."""

    pixels: list[np.ndarray] = field(default_factory=list)
    labels: list[int] | None = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        pixels = np.stack(self.pixels) if self.pixels else np.zeros((0, 1, 1, 3), np.uint8)
        return pixels, None if self.labels is None else np.asarray(self.labels, dtype=np.int64)


class Frames:
    """Where the images come from; ``calibration()`` streams, ``held_out`` fills as a side effect or on demand."""

    name: str
    kind: str
    fingerprint: str
    images: int = 0  # calibration images yielded
    skipped: int = 0

    def calibration(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def verification(self) -> HeldOut:
        raise NotImplementedError


def _digest(doc: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class FolderFrames(Frames):
    def __init__(self, root: Path, pre: Preprocessor, labels: Sequence[str], *, num_calib: int, num_verify: int,
                 seed: int, on_image: Callable[[int], None] | None = None) -> None:
        paths = find_images(root)
        if not paths:
            raise DataError(f"calibration folder {root} has no {'/'.join(IMAGE_EXTENSIONS)} images; add images, or "
                            "pass a video file or a camera")
        order = np.random.default_rng(seed).permutation(len(paths))
        held = min(num_verify, len(paths) // 4)
        self.verify_paths = [paths[i] for i in sorted(order[:held])]
        self.calib_paths = [paths[i] for i in sorted(order[held:held + num_calib])]
        self.unused = len(paths) - held - len(self.calib_paths)  # past --num-calib: neither calibrates nor verifies
        self.pre, self.on_image, self.root = pre, on_image, root
        self.kind = "images"
        self.label_of = _folder_labels(root, paths, labels)
        self.name = f"folder {root} ({len(self.calib_paths)} calibration and {held} held-out of {len(paths)} images)"
        self.fingerprint = _digest({"kind": "folder", "preprocessing": pre_dict(pre), "num_calib": num_calib,
                                    "num_verify": num_verify, "seed": seed,
                                    "files": [_identity(p, root) for p in self.calib_paths]})

    def calibration(self) -> Iterator[np.ndarray]:
        self.images = self.skipped = 0
        for path in self.calib_paths:
            img = self._read(path)
            if img is None:
                continue
            self.images += 1
            if self.on_image is not None:
                self.on_image(1)
            yield self.pre.image(img)

    def _read(self, path: Path) -> Any:
        try:
            return open_rgb(path)
        except _DECODE_ERRORS as e:
            self.skipped += 1
            log.warning("skipping unreadable image %s (%s)", path, " ".join(str(e).split()))
            return None

    def verification(self) -> HeldOut:
        held = HeldOut(labels=[] if self.label_of is not None else None)
        for path in self.verify_paths:
            img = self._read(path)
            if img is None:
                continue
            held.pixels.append(self.pre.pixels(img))
            if held.labels is not None:
                held.labels.append(self.label_of[path.relative_to(self.root).parts[0]])
        return held


def pre_dict(pre: Preprocessor) -> dict[str, Any]:
    return {"size": pre.input_size, "resize": pre.resize, "mean": list(pre.mean), "std": list(pre.std),
            "interpolation": pre.interpolation, "order": pre.channel_order, "resampler": pre.resampler}


def _identity(path: Path, root: Path) -> list[Any]:
    st = path.stat()
    return [path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns]


def _folder_labels(root: Path, paths: list[Path], labels: Sequence[str]) -> dict[str, int] | None:
    """Class folder -> label index, when every image sits in a folder named after one of the model's labels."""
    tops = {p.relative_to(root).parts[0] for p in paths if len(p.relative_to(root).parts) > 1}
    if any(len(p.relative_to(root).parts) == 1 for p in paths) or not tops or not tops <= set(labels):
        return None
    return {name: list(labels).index(name) for name in tops}


class VideoFrames(Frames):
    """A source the camera app reads (see the module docstring)."""

    def __init__(self, text: str, pre: Preprocessor, *, num_calib: int, num_verify: int, every: int, pace: bool,
                 retries: int = 10, on_image: Callable[[int], None] | None = None) -> None:
        from edge_resnet.runtime.sources import parse_source

        self.source = parse_source(text)
        if self.source.kind == "file":
            path = Path(str(self.source.target))
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                raise DataError(f"calibration data {path} is a single image; calibration needs many, pass the "
                                f"folder that holds it ({path.parent})")
            if not path.is_file():
                raise DataError(f"calibration data {path} does not exist; pass a folder of images, a video file or "
                                "a camera (0, csi://0, rtsp://...)")
        self.pre, self.on_image = pre, on_image
        self.num_calib, self.num_verify, self.every, self.pace, self.retries = num_calib, num_verify, every, pace, retries
        self.kind = "live" if self.source.live else "video"
        self.held = HeldOut()
        self.end: str | None = None
        self.dropped = 0
        self.name = f"{self.source.name} (every {every} frame{'s' if every > 1 else ''}" + (
            ", paced" if pace and not self.source.live else "") + ")"
        doc: dict[str, Any] = {"kind": self.kind, "source": self.source.name, "preprocessing": pre_dict(pre),
                               "num_calib": num_calib, "num_verify": num_verify, "every": every, "pace": pace}
        if self.source.kind == "file":
            st = Path(str(self.source.target)).stat()
            doc.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
        self.fingerprint = _digest(doc)
        self._reader: Any = None

    def open(self) -> None:
        """Open the source now (before any work), as the camera app does."""
        from edge_resnet.runtime.reader import FrameReader
        from edge_resnet.runtime.sources import open_capture

        cap = open_capture(self.source, retries=self.retries if self.source.network else 0)
        self._reader = FrameReader(self.source, cap, pace=self.pace).start()

    def calibration(self) -> Iterator[np.ndarray]:
        if self._reader is None:
            self.open()
        reader, taken, last = self._reader, 0, None
        self.images = 0
        try:
            while self.images < self.num_calib or len(self.held.pixels) < self.num_verify:
                frame = reader.get(timeout=1.0)
                if frame is None:
                    if reader.finished:
                        break
                    continue
                if last is not None and frame.index - last < self.every:
                    continue
                last = frame.index
                taken += 1
                verify_turn = taken % VERIFY_EVERY == 0 or self.images >= self.num_calib
                if verify_turn and len(self.held.pixels) < self.num_verify:
                    self.held.pixels.append(self.pre.pixels(frame.image, order="BGR"))
                elif self.images < self.num_calib:
                    self.images += 1
                    yield self.pre.image(frame.image, order="BGR")
                else:
                    continue
                if self.on_image is not None:
                    self.on_image(1)
        finally:
            reader.stop()
            self.end, self.dropped = reader.end, reader.dropped
        if reader.error is not None:
            raise DataError(f"reading {self.source.name} failed ({' '.join(str(reader.error).split())})")
        if self.images < self.num_calib:
            log.warning("%s ended (%s) after %d calibration and %d held-out frames of the %d and %d asked for",
                        self.source.name, reader.message or reader.end, self.images, len(self.held.pixels),
                        self.num_calib, self.num_verify)

    def verification(self) -> HeldOut:
        return self.held


def open_frames(text: str, pre: Preprocessor, labels: Sequence[str], *, num_calib: int, num_verify: int,
                every: int = 1, seed: int = 0, pace: bool = False,
                on_image: Callable[[int], None] | None = None) -> Frames:
    """The calibration source ``text`` names: a folder of images, or a source the camera app reads.

    Raises:
        DataError: a missing path, an empty folder, a single image, ``every`` for a folder.
        ConfigError: a source string the camera app does not understand.
    """
    path = Path(text)
    if path.is_dir():
        if every != 1 or pace:
            raise DataError(f"--every and --pace select video frames, but {path} is a folder of images; drop them")
        return FolderFrames(path, pre, labels, num_calib=num_calib, num_verify=num_verify, seed=seed,
                            on_image=on_image)
    return VideoFrames(text, pre, num_calib=num_calib, num_verify=num_verify, every=every, pace=pace,
                       on_image=on_image)


__all__ = ["Frames", "HeldOut", "open_frames"]
