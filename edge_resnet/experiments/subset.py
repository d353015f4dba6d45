"""A smaller training set as an ImageFolder on disk, so that ``train()`` can read it like any other."""

from __future__ import annotations

from pathlib import Path

from edge_resnet.data import load_dataset
from edge_resnet.data.datasets import stratified_split
from edge_resnet.errors import ConfigError


def write_train_subset(source: str | None, limit: int, root: Path, *, seed: int = 0) -> Path:
    """Write ``root/{train,val,test}/<class>/<i>.png`` with ``limit`` stratified training images and
    the whole val and test splits of ``source``; an existing complete copy is reused.

    Raises:
        ConfigError: ``limit`` below one image per class or above the training split.
    """
    data = load_dataset(source, seed=seed)
    n_train = len(data.train)
    if not len(data.classes) <= limit <= n_train:
        raise ConfigError(f"limit_train {limit} must be between {len(data.classes)} (one image per class) "
                          f"and {n_train} (the training split of {data.name})")
    done = root / ".complete"
    if done.is_file() and done.read_text() == f"{data.name} {limit} {seed}\n":
        return root
    labels = [data.train[i][1] for i in range(n_train)]
    keep, _ = stratified_split(labels, (limit / n_train, 1.0), seed)
    for split, dataset, indices in (("train", data.train, keep), ("val", data.val, range(len(data.val))),
                                    ("test", data.test, range(len(data.test)))):
        for i in indices:
            sample = dataset[i]
            if sample is None:
                continue
            img, label = sample
            folder = root / split / data.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            img.save(folder / f"{i:06d}.png")
    done.write_text(f"{data.name} {limit} {seed}\n")
    return root
