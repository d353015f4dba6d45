"""ImageFolder datasets: ``root/<class>/<image>``, optionally under ``train/``, ``val/``, ``test/``."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from edge_resnet.data.datasets import SPLITS, DatasetSplits, stratified_split
from edge_resnet.errors import DataError
from edge_resnet.imaging import IMAGE_EXTENSIONS, find_images, open_rgb, to_rgb

__all__ = ["IMAGE_EXTENSIONS", "find_images", "load_image_folder", "open_rgb", "readable", "to_rgb"]

log = logging.getLogger(__name__)

# train / val / test fractions when the folder has no split of its own
FOLDER_FRACTIONS = (0.8, 0.1, 0.1)


def readable(path: Path) -> bool:
    """Whether PIL recognises the file; cheap (reads the header and checks the structure)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                img.verify()
        return True
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return False


class ImageFileDataset(Dataset):
    """(path, label) samples decoded on access. A file that fails to decode yields None, which
    ``collate_skip_none`` drops, with a warning: one broken JPEG never stops an epoch."""

    def __init__(self, samples: list[tuple[Path, int]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.samples]

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        try:
            img = open_rgb(path)
        except (OSError, SyntaxError, ValueError) as e:
            log.warning("skipping unreadable image %s (%s)", path, e)
            return None
        return img, label


def _class_dirs(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _scan(root: Path, classes: list[str]) -> tuple[list[tuple[Path, int]], int]:
    samples, skipped = [], 0
    for label, cls in enumerate(classes):
        for path in find_images(root / cls):
            if readable(path):
                samples.append((path, label))
            else:
                log.warning("skipping unreadable image %s", path)
                skipped += 1
    return samples, skipped


def load_image_folder(root: Path, *, seed: int = 0) -> DatasetSplits:
    """Open ``root`` as an ImageFolder; a folder without train/val/test is split 80/10/10, seeded."""
    present = [s for s in SPLITS if (root / s).is_dir()]
    if "train" in present:
        classes = _class_dirs(root / "train")
        if not classes:
            raise DataError(f"{root / 'train'} has no class subfolders; expected {root}/train/<class>/<image>.jpg")
        parts, skipped = {}, 0
        for split in present:
            split_classes = _class_dirs(root / split)
            if split_classes != classes:
                raise DataError(
                    f"{root / split} has classes {split_classes[:5]}..., {root / 'train'} has {classes[:5]}...; "
                    "every split needs the same class subfolders"
                )
            parts[split], n_bad = _scan(root / split, classes)
            skipped += n_bad
        # A dataset with only train/val (ImageNet style) evaluates on val for both.
        val = parts.get("val", parts.get("test"))
        test = parts.get("test", parts.get("val"))
        if val is None:
            raise DataError(f"{root} has train/ but neither val/ nor test/; add one or drop the split folders")
        train = parts["train"]
    else:
        classes = _class_dirs(root)
        if not classes:
            raise DataError(
                f"{root} has no class subfolders; expected {root}/<class>/<image>.jpg "
                "(one folder per class)"
            )
        samples, skipped = _scan(root, classes)
        train_i, val_i, test_i = stratified_split([s[1] for s in samples], FOLDER_FRACTIONS, seed)
        train, val, test = ([samples[i] for i in idx] for idx in (train_i, val_i, test_i))
    if not train:
        raise DataError(f"{root} has class folders but no readable {'/'.join(IMAGE_EXTENSIONS)} images")
    return DatasetSplits(
        name=root.name, classes=classes,
        train=ImageFileDataset(train), val=ImageFileDataset(val), test=ImageFileDataset(test),
        skipped=skipped,
    )
