"""The bundled default dataset: UCI optical recognition of handwritten digits.

1,797 8x8 grey images with values 0..16 in ten classes; the copy scikit-learn ships
(``assets/digits.csv.gz``, see ``assets/DIGITS_LICENSE.txt``). We ship the 57 kB file itself
rather than depend on scikit-learn (tens of MB) for one table.
"""

from __future__ import annotations

import gzip
from importlib import resources

import numpy as np

from edge_resnet.data.datasets import ArrayDataset, DatasetSplits, stratified_split

# train / val / test fractions of each class
DIGITS_FRACTIONS = (0.7, 0.1, 0.2)


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """The raw table: images (1797, 8, 8) uint8 in 0..255 and labels (1797,) int64."""
    raw = resources.files("edge_resnet.data").joinpath("assets/digits.csv.gz").read_bytes()
    table = np.loadtxt(gzip.decompress(raw).decode().splitlines(), delimiter=",", dtype=np.int64)
    pixels = table[:, :64].reshape(-1, 8, 8)
    # 0..16 counts of "on" pixels per 4x4 block, stretched to the 8-bit range.
    images = np.rint(pixels * (255 / 16)).astype(np.uint8)
    return images, table[:, 64]


def load_digits(*, seed: int = 0) -> DatasetSplits:
    images, labels = read_digits()
    rgb = np.repeat(images[..., None], 3, axis=-1)
    train_idx, val_idx, test_idx = stratified_split(labels, DIGITS_FRACTIONS, seed)
    train = rgb[train_idx]
    mean = float(train.mean() / 255)
    std = float(train.std() / 255)

    def part(idx: list[int]) -> ArrayDataset:
        return ArrayDataset(rgb[idx], labels[idx].tolist())

    return DatasetSplits(
        name="digits",
        classes=[str(d) for d in range(10)],
        train=part(train_idx), val=part(val_idx), test=part(test_idx),
        mean=(mean,) * 3, std=(std,) * 3,
        flip_invariant=False,
    )
