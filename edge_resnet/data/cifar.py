"""CIFAR-10 in its python-batch format (``data_batch_1..5``, ``test_batch``, ``batches.meta``)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from edge_resnet.data.datasets import ArrayDataset, DatasetSplits, stratified_split
from edge_resnet.errors import DataError

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# held out of the 50,000 training images for validation
CIFAR_VAL_FRACTION = 0.1


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists and dicts only: a batch file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
        # pickle protocol 5 (numpy's choice there) rebuilds arrays from a byte buffer
        ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")


def _read_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError) as e:
        raise DataError(f"{path} is not a readable CIFAR-10 batch ({e}); download the python version again") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path} holds a {type(batch).__name__}, not a CIFAR-10 batch dict; "
                        "download the python version again")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in batch.items()}


def find_cifar10(path: Path) -> Path | None:
    """The folder holding the batches: ``path`` itself or its ``cifar-10-batches-py``."""
    for candidate in (path, path / "cifar-10-batches-py"):
        if (candidate / "data_batch_1").is_file():
            return candidate
    return None


def _images(batch: dict, path: Path) -> tuple[np.ndarray, list[int]]:
    try:
        data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = [int(v) for v in batch["labels"]]
    except (KeyError, ValueError, TypeError) as e:
        raise DataError(f"{path} lacks CIFAR-10 'data'/'labels' ({e}); is it a CIFAR-100 file?") from None
    if len(labels) != len(data) or any(not 0 <= v < 10 for v in labels):
        raise DataError(f"{path} has {len(data)} images but {len(labels)} labels (or labels outside 0..9); "
                        "the batch is damaged, download it again")
    return np.ascontiguousarray(data), labels


def load_cifar10(root: Path, *, seed: int = 0) -> DatasetSplits:
    missing = [n for n in (*TRAIN_BATCHES, "test_batch") if not (root / n).is_file()]
    if missing:
        raise DataError(f"CIFAR-10 folder {root} lacks {', '.join(missing)}; copy the complete python batches")
    train_parts = [_images(_read_batch(root / n), root / n) for n in TRAIN_BATCHES]
    train_x = np.concatenate([x for x, _ in train_parts])
    train_y = [y for _, ys in train_parts for y in ys]
    test_x, test_y = _images(_read_batch(root / "test_batch"), root / "test_batch")
    classes = [str(i) for i in range(10)]
    if (root / "batches.meta").is_file():
        names = _read_batch(root / "batches.meta").get("label_names")
        if names:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    train_i, val_i = stratified_split(train_y, (1 - CIFAR_VAL_FRACTION, CIFAR_VAL_FRACTION), seed)
    y = np.asarray(train_y)
    return DatasetSplits(
        name="cifar10", classes=classes,
        train=ArrayDataset(train_x[train_i], y[train_i].tolist()),
        val=ArrayDataset(train_x[val_i], y[val_i].tolist()),
        test=ArrayDataset(test_x, test_y),
        mean=CIFAR10_MEAN, std=CIFAR10_STD,
    )
