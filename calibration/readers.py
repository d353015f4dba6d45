"""Calibration data: which images INT8 calibration runs on, and how they become input tensors.

INT8 scales are only as good as the images the activation ranges were measured on, so this
module makes that choice explicit and reproducible:

- the source can be the bundled/CIFAR-10 dataset (its train split), a folder of images (its
  ``train/`` part when it has one, so held-out images stay unseen), or a video file (every k-th
  frame, the footage a camera deployment actually sees);
- at most ``num`` items are chosen with a seeded generator and read in sorted order, so the
  same arguments always give the same images;
- every image goes through ``eval_transform(preprocessing)``, the exact transform evaluation and
  the runtime use, so calibration never sees differently scaled inputs than deployment;
- a fingerprint identifies the selection (files by path/size/mtime, never by decoding them),
  so a calibration cache can tell cheaply whether it was made from the same data;
- iteration decodes and preprocesses one batch at a time: memory stays bounded by the batch,
  not the calibration set, and a video is read in one sequential pass.

Unreadable images or frames are skipped with a warning and counted; a source that yields no
image at all is a ``DataError``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from edge_resnet.contract.preprocess import PreprocessSpec
from edge_resnet.data import eval_transform
from edge_resnet.data.datasets import BUNDLED
from edge_resnet.data.folder import IMAGE_EXTENSIONS, find_images, open_rgb
from edge_resnet.errors import DataError

log = logging.getLogger("edge_resnet.calibration")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")

# What decoding a broken image file raises in PIL (UnidentifiedImageError is an OSError;
# DecompressionBombError is not).
_DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


# ----------------------------------------------------------------------------- item readers
# Each source kind is reduced to a list of "items" and a reader that turns one item into a
# PIL image (or None when it cannot be decoded, after logging why). CalibrationData only
# batches, so the sampling/batching/counting logic exists once.


@dataclass(frozen=True)
class _DatasetItems:
    """Selected samples of an in-memory dataset split, read by index."""

    dataset: Any  # a torch Dataset whose samples are (PIL image, label) or None

    def read_all(self, count: int, warn: Callable[..., None]) -> Iterator[Image.Image | None]:
        for i in range(count):
            sample = self.dataset[i]
            if sample is None:
                warn("skipping unreadable dataset sample %d", i)
                yield None
            else:
                yield sample[0]


@dataclass(frozen=True)
class _FileItems:
    """Selected image files, decoded one at a time."""

    paths: tuple[Path, ...]

    def read_all(self, count: int, warn: Callable[..., None]) -> Iterator[Image.Image | None]:
        for path in self.paths[:count]:
            try:
                yield open_rgb(path)
            except _DECODE_ERRORS as e:
                warn("skipping unreadable calibration image %s (%s)", path, e)
                yield None


@dataclass(frozen=True)
class _VideoItems:
    """Selected frame indices of one video, decoded in a single sequential pass."""

    path: Path
    frames: tuple[int, ...]  # sorted, unique

    def read_all(self, count: int, warn: Callable[..., None]) -> Iterator[Image.Image | None]:
        import cv2

        wanted = self.frames[:count]
        cap = cv2.VideoCapture(str(self.path))
        try:
            if not cap.isOpened():
                warn("could not reopen video %s; its %d selected frames are skipped", self.path, len(wanted))
                yield from (None for _ in wanted)
                return
            pos = 0  # index of the frame the next grab() returns
            for k, index in enumerate(wanted):
                # grab() decodes nothing we keep: skipping costs no frame buffers.
                while pos < index and cap.grab():
                    pos += 1
                if pos < index or not cap.grab():
                    missing = len(wanted) - k
                    warn(
                        "video %s ended before frame %d (%d frames read); %d selected frame(s) skipped",
                        self.path, index, pos, missing,
                    )
                    yield from (None for _ in range(missing))
                    return
                pos += 1
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    warn("skipping frame %d of %s: it failed to decode", index, self.path)
                    yield None
                    continue
                yield Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        finally:
            cap.release()


# ----------------------------------------------------------------------------- the public object


class CalibrationData:
    """The chosen calibration items of one source, iterable as preprocessed batches.

    Attributes:
        name: human-readable description for logs and reports.
        kind: "dataset", "imagefolder", "images" or "video".
        fingerprint: sha256 hex of the selection and preprocessing (see ``open_calibration_data``).
        images: items yielded by the last iteration of ``batches``.
        skipped: unreadable items skipped by the last iteration of ``batches``.
    """

    def __init__(self, *, name: str, kind: str, fingerprint: str, count: int, items: Any,
                 transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.name, self.kind, self.fingerprint = name, kind, fingerprint
        self._count, self._items, self._transform = count, items, transform
        self.images = 0
        self.skipped = 0
        self._passes = 0

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"CalibrationData({self.name!r}, kind={self.kind!r}, items={self._count})"

    def batches(self, batch_size: int = 64) -> Iterator[torch.Tensor]:
        """Float32 NCHW batches (the last one may be smaller), preprocessed one batch at a time.

        Raises:
            DataError: when not a single selected item could be read (raised after the pass).
        """
        if batch_size < 1:
            raise DataError(f"calibration batch size must be >= 1, got {batch_size}")
        self.images = self.skipped = 0
        # every pass reads the same items: say what is unreadable on the first one only
        warn = log.warning if self._passes == 0 else log.debug
        self._passes += 1
        pending: list[torch.Tensor] = []
        for img in self._items.read_all(self._count, warn):
            if img is None:
                self.skipped += 1
                continue
            pending.append(self._transform(img))
            if len(pending) == batch_size:
                self.images += len(pending)
                yield torch.stack(pending).to(torch.float32)
                pending = []
        if pending:
            self.images += len(pending)
            yield torch.stack(pending).to(torch.float32)
        if self.images == 0:
            raise DataError(
                f"none of the {self._count} calibration items of {self.name} could be read; "
                "check the files (see the warnings above) or pass other calibration data"
            )
        if self.skipped:
            warn("calibration used %d of %d items of %s; %d unreadable ones were skipped",
                 self.images, self._count, self.name, self.skipped)


# ----------------------------------------------------------------------------- opening a source


def open_calibration_data(source: str | Path | None, preprocessing: PreprocessSpec, *, num: int = 512,
                          seed: int = 0, every: int = 1, dataset_seed: int = 0,
                          exclude_heldout: bool = False) -> CalibrationData:
    """Choose the calibration items of ``source`` (nothing is decoded yet).

    Args:
        source: None or "digits" (the bundled dataset's train split), or "synthetic-digits" (the
            synthetic scenes' train split); a CIFAR-10 batches folder
            (its train split); a folder of images (only its ``train/`` when it has one, else all
            images under it, labels ignored); or a video file (one of ``VIDEO_EXTENSIONS``).
        preprocessing: the model's spec; each image goes through ``eval_transform`` of it.
        num: at most this many items; more candidates are subsampled with ``seed``.
        seed: fixes the subsample.
        every: for videos, only frames 0, every, 2*every, ... are candidates.
        dataset_seed: the split seed of a dataset source, as given to ``load_dataset`` (it
            decides which images are the train split).
        exclude_heldout: the folder is also the dataset that verifies the model: a class-folder
            tree without split folders then calibrates on its seeded train split only (as
            ``load_image_folder`` splits it), so its test split stays unseen. Otherwise every
            image under the folder is a candidate, subfolders or not.

    Raises:
        DataError: a missing path, an empty folder, an unopenable or empty video, a single
            image file, ``num`` or ``every`` below 1, or ``every`` for a source that is not a video.
    """
    if num < 1:
        raise DataError(f"the number of calibration images must be >= 1, got {num}; a few hundred is typical")
    if every < 1:
        raise DataError(f"the video frame step must be >= 1, got every={every}; use 1 for every frame")
    transform = eval_transform(preprocessing)
    common = {"preprocessing": preprocessing.to_dict(), "num": num, "seed": seed, "every": every}

    if source is None or str(source) in BUNDLED:
        _only_video_steps(every, f"the bundled {source or 'digits'} dataset")
        return _open_dataset(None, common, num=num, seed=seed, dataset_seed=dataset_seed, transform=transform,
                             bundled=str(source or "digits"))
    path = Path(source)
    if not path.exists():
        raise DataError(
            f"calibration data {path} does not exist; pass a folder of images, a video file "
            f"({'/'.join(VIDEO_EXTENSIONS)}), a CIFAR-10 batches folder, or 'digits'"
        )
    if path.is_dir():
        from edge_resnet.data.cifar import find_cifar10

        cifar_dir = find_cifar10(path)
        if cifar_dir is not None:
            _only_video_steps(every, f"the CIFAR-10 folder {path}")
            return _open_dataset(cifar_dir, common, num=num, seed=seed, dataset_seed=dataset_seed,
                                 transform=transform)
        _only_video_steps(every, f"the image folder {path}")
        return _open_folder(path, common, num=num, seed=seed, dataset_seed=dataset_seed,
                            exclude_heldout=exclude_heldout, transform=transform)
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return _open_video(path, common, num=num, seed=seed, every=every, transform=transform)
    if suffix in IMAGE_EXTENSIONS:
        raise DataError(
            f"calibration data {path} is a single image; calibration needs many, pass the folder that "
            f"holds it ({path.parent})"
        )
    raise DataError(
        f"calibration data {path} is neither a folder of images nor a video "
        f"({'/'.join(VIDEO_EXTENSIONS)}); pass a folder, a video file or 'digits'"
    )


def _only_video_steps(every: int, what: str) -> None:
    """Refuse ``every`` where it would silently mean nothing: a user who set it expects it to act."""
    if every != 1:
        raise DataError(f"every={every} selects video frames, but the calibration data is {what}; "
                        "drop the frame step or pass a video file")


def _choose(n: int, num: int, seed: int, what: str) -> list[int]:
    """``num`` of ``range(n)`` chosen with ``seed`` and sorted (all of them, logged, when n <= num)."""
    if n <= num:
        log.info("%s has %d candidates, not more than num=%d: all %d are used", what, n, num, n)
        return list(range(n))
    chosen = np.random.default_rng(seed).choice(n, size=num, replace=False)
    return sorted(int(i) for i in chosen)


def _fingerprint(kind: str, common: dict[str, Any], items: Any) -> str:
    """sha256 of a canonical JSON: identical in any process for identical inputs."""
    doc = {"kind": kind, **common, "items": items}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _file_identity(path: Path, root: Path) -> list[Any]:
    """(relative path, size, mtime_ns): changes when the file is rewritten, costs one stat."""
    st = path.stat()
    return [path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns]


class _Subset:
    """``base`` restricted to ``indices`` (a dataset that is not an in-memory array)."""

    def __init__(self, base: Any, indices: Sequence[int]) -> None:
        self.base, self.indices = base, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.base[self.indices[i]]


def _open_dataset(cifar_dir: Path | None, common: dict[str, Any], *, num: int, seed: int, dataset_seed: int,
                  transform: Callable, bundled: str = "digits") -> CalibrationData:
    from edge_resnet.data import load_dataset
    from edge_resnet.data.datasets import ArrayDataset

    if cifar_dir is None:
        splits = load_dataset(bundled, seed=dataset_seed)
        # the same bytes load_digits reads (see edge_resnet.data.digits.read_digits); the synthetic
        # scenes are a deterministic function of them, their name and the split seed
        raw = resources.files("edge_resnet.data").joinpath("assets/digits.csv.gz").read_bytes()
        source_id: Any = {"sha256": hashlib.sha256(raw).hexdigest()}
        if bundled != "digits":
            from edge_resnet.data.synthetic import GENERATOR_VERSION

            source_id["generator"] = GENERATOR_VERSION
    else:
        from edge_resnet.data.cifar import TRAIN_BATCHES

        splits = load_dataset(str(cifar_dir), seed=dataset_seed)
        names = [n for n in (*TRAIN_BATCHES, "test_batch", "batches.meta") if (cifar_dir / n).is_file()]
        source_id = {"files": [_file_identity(cifar_dir / n, cifar_dir) for n in names]}
    train = splits.train
    name = f"{splits.name} (train split)"
    indices = _choose(len(train), num, seed, name)
    if isinstance(train, ArrayDataset):
        # Keep only the chosen rows: the rest of a 50,000-image CIFAR array is freed.
        subset: Any = ArrayDataset(train.images[indices], [train.labels[i] for i in indices])
    else:
        subset = _Subset(train, indices)
    fingerprint = _fingerprint("dataset", common, {
        "dataset": splits.name, "dataset_seed": dataset_seed, "indices": indices, "source": source_id,
    })
    return CalibrationData(name=name, kind="dataset", fingerprint=fingerprint, count=len(indices),
                           items=_DatasetItems(subset), transform=transform)


def _open_folder(root: Path, common: dict[str, Any], *, num: int, seed: int, dataset_seed: int,
                 exclude_heldout: bool, transform: Callable) -> CalibrationData:
    image_root = root / "train" if (root / "train").is_dir() else root
    paths = find_images(image_root)
    if not paths:
        where = f"{image_root} (its train/ part; val/ and test/ are kept unseen)" if image_root != root else str(root)
        raise DataError(
            f"calibration folder {where} has no {'/'.join(IMAGE_EXTENSIONS)} images; "
            "add images, or pass a video file or 'digits'"
        )
    # ImageFolder layout: every image sits inside a (class) subfolder, none at the top.
    kind = "imagefolder" if all(p.parent != image_root for p in paths) else "images"
    label = f"folder {image_root}"
    if kind == "imagefolder" and image_root == root and exclude_heldout:
        # An ImageFolder without split folders is split by the seed it was trained with
        # (edge_resnet.data.folder.load_image_folder): calibrate on its train part only, so
        # the test part that verifies the export stays unseen.
        from edge_resnet.data.folder import load_image_folder

        paths = sorted(p for p, _ in load_image_folder(root, seed=dataset_seed).train.samples)
        label = f"folder {root} (its train split)"
    indices = _choose(len(paths), num, seed, label)
    chosen = tuple(paths[i] for i in indices)
    count = f"{len(chosen)} images" if len(chosen) == len(paths) else f"{len(chosen)} of {len(paths)} images"
    fingerprint = _fingerprint(kind, common, {"files": [_file_identity(p, root) for p in chosen]})
    return CalibrationData(name=f"{label} ({count})", kind=kind, fingerprint=fingerprint, count=len(chosen),
                           items=_FileItems(chosen), transform=transform)


def _open_video(path: Path, common: dict[str, Any], *, num: int, seed: int, every: int,
                transform: Callable) -> CalibrationData:
    try:
        import cv2
    except ImportError:
        raise DataError(f"reading the video {path} needs OpenCV: pip install 'edge-resnet[video]' "
                        "(on a Jetson, JetPack's own cv2 works too)") from None

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise DataError(
                f"OpenCV cannot open the video {path}; check that it is a complete, playable file "
                "(re-encode it, e.g. to H.264 .mp4) or pass a folder of extracted frames"
            )
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if total <= 0:
            # Some containers (live recordings, some .webm/.mkv) carry no frame count: count them.
            log.info("video %s reports no frame count; counting its frames", path)
            total = 0
            while cap.grab():
                total += 1
    finally:
        cap.release()
    if total <= 0:
        raise DataError(f"the video {path} has no frames OpenCV can decode; pass another video or a folder of images")
    candidates = list(range(0, total, every))
    step = "every frame" if every == 1 else f"every {_ordinal(every)} frame"
    picked = _choose(len(candidates), num, seed, f"video {path} ({step})")
    frames = tuple(candidates[i] for i in picked)
    count = f"{len(frames)} frames" if len(frames) == len(candidates) else f"{len(frames)} of {len(candidates)} frames"
    label = f"video {path} ({step}, {count})"
    st = path.stat()
    fingerprint = _fingerprint("video", common, {
        "path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "frames": list(frames),
    })
    return CalibrationData(name=label, kind="video", fingerprint=fingerprint, count=len(frames),
                           items=_VideoItems(path, frames), transform=transform)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
