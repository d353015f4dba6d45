"""Labelled datasets as train/val/test splits of PIL images, and the function that finds them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from edge_resnet.errors import DataError

SPLITS = ("train", "val", "test")


class ArrayDataset(Dataset):
    """Images held in memory as a uint8 array (N, H, W, 3)."""

    def __init__(self, images: np.ndarray, labels: Sequence[int]) -> None:
        self.images, self.labels = images, list(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return Image.fromarray(self.images[i]), self.labels[i]


class Transformed(Dataset):
    """A dataset's samples passed through ``transform``; an unreadable sample stays None."""

    def __init__(self, base: Dataset, transform) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        sample = self.base[i]
        if sample is None:
            return None
        img, label = sample
        return self.transform(img), label


def collate_skip_none(batch: list):
    """default_collate without the samples that could not be read."""
    from torch.utils.data import default_collate

    kept = [s for s in batch if s is not None]
    return default_collate(kept) if kept else None


@dataclass
class DatasetSplits:
    name: str
    classes: list[str]
    train: Dataset
    val: Dataset
    test: Dataset
    # the statistics the default preprocessing normalises with (None: use ImageNet's)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    # False where a mirrored image means something else (digits)
    flip_invariant: bool = True
    # files found but unreadable, skipped with a warning
    skipped: int = 0
    notes: list[str] = field(default_factory=list)

    def split(self, name: str) -> Dataset:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def summary(self) -> str:
        text = (f"{self.name}: {len(self.train)} train / {len(self.val)} val / {len(self.test)} test "
                f"images, {len(self.classes)} classes")
        if self.skipped:
            text += f", {self.skipped} unreadable files skipped"
        for note in self.notes:  # e.g. that the data is synthetic
            text += f" ({note})"
        return text


def stratified_split(labels: Sequence[int], fractions: Sequence[float], seed: int) -> list[list[int]]:
    """Split indices per class into len(fractions) parts; the last part takes the remainder."""
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    parts: list[list[int]] = [[] for _ in fractions]
    for c in np.unique(labels_arr):
        idx = np.flatnonzero(labels_arr == c)
        rng.shuffle(idx)
        start = 0
        for k, frac in enumerate(fractions):
            stop = len(idx) if k == len(fractions) - 1 else start + round(frac * len(idx))
            parts[k] += idx[start:stop].tolist()
            start = stop
    return [sorted(p) for p in parts]


# datasets generated from what the package ships, selected by keyword instead of a path
BUNDLED: tuple[str, ...] = ("digits", "synthetic-digits")


def dataset_name(source: str | None) -> str:
    """The name a dataset will report, without reading it (used to name run directories)."""
    if source is None or source == "digits":
        return "digits"
    if source in BUNDLED:
        return source
    from edge_resnet.data.cifar import find_cifar10

    path = Path(source)
    return "cifar10" if path.is_dir() and find_cifar10(path) else path.name


def load_dataset(source: str | None = None, *, seed: int = 0) -> DatasetSplits:
    """Find and open a dataset.

    Args:
        source: None or "digits" for the bundled digits; "synthetic-digits" for the harder
            synthetic scenes made from them; a folder of CIFAR-10 python batches; or an ImageFolder (``class/image.jpg``, optionally under train/val/test).
        seed: fixes the split of datasets that ship without one.

    Raises:
        DataError: missing, empty or unrecognised source.
    """
    if source is None or source == "digits":
        from edge_resnet.data.digits import load_digits

        return load_digits(seed=seed)
    if source == "synthetic-digits":
        from edge_resnet.data.synthetic import load_synthetic_digits

        return load_synthetic_digits(seed=seed)
    path = Path(source)
    if not path.exists():
        raise DataError(
            f"data folder {path} does not exist; pass --data with an ImageFolder or CIFAR-10 folder, "
            f"or leave it out to use the bundled digits ({' or '.join(BUNDLED)} by name)"
        )
    if not path.is_dir():
        raise DataError(f"--data {path} is a file; it must be a folder (ImageFolder or CIFAR-10 batches)")
    from edge_resnet.data.cifar import find_cifar10, load_cifar10

    cifar_dir = find_cifar10(path)
    if cifar_dir is not None:
        return load_cifar10(cifar_dir, seed=seed)
    from edge_resnet.data.folder import load_image_folder

    return load_image_folder(path, seed=seed)
