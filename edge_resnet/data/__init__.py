"""Datasets (bundled digits, ImageFolder, CIFAR-10) and the preprocessing spec."""

from edge_resnet.data.datasets import (
    SPLITS,
    DatasetSplits,
    Transformed,
    collate_skip_none,
    dataset_name,
    load_dataset,
    stratified_split,
)
from edge_resnet.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec
from edge_resnet.data.transforms import AUGMENTS, eval_transform, train_transform

__all__ = [
    "AUGMENTS", "IMAGENET_MEAN", "IMAGENET_STD", "SPLITS", "DatasetSplits", "PreprocessSpec", "Transformed",
    "collate_skip_none", "dataset_name",
    "eval_transform", "load_dataset", "stratified_split", "train_transform",
]
