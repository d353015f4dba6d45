"""Datasets (bundled digits, ImageFolder, CIFAR-10) and their transforms (the spec: edge_resnet.contract.preprocess)."""

from edge_resnet._lazy import lazy_exports

_EXPORTS = {
    "SPLITS": "datasets",
    "DatasetSplits": "datasets",
    "Transformed": "datasets",
    "collate_skip_none": "datasets",
    "dataset_name": "datasets",
    "load_dataset": "datasets",
    "stratified_split": "datasets",
    "eval_transform": "transforms",
    "train_transform": "transforms",
}
lazy_exports(__name__, _EXPORTS)

__all__ = list(_EXPORTS)
