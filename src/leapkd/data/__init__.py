"""Datasets (built-in and image folders) and transforms; start with ``build_dataset``."""

from leapkd.data.builtin import DatasetInfo, builtin_datasets, load_builtin
from leapkd.data.datasets import (
    ArrayDataset,
    LabeledSubset,
    build_dataset,
    images_per_class,
    num_skipped,
    skipped_mask,
    subset_indices,
)
from leapkd.data.folder import IMAGE_EXTENSIONS, ImageFolderDataset, load_image, to_rgb
from leapkd.data.labeled import LabeledImages
from leapkd.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "ArrayDataset",
    "DatasetInfo",
    "ImageFolderDataset",
    "LabeledImages",
    "LabeledSubset",
    "build_dataset",
    "build_transform",
    "images_per_class",
    "builtin_datasets",
    "load_builtin",
    "load_image",
    "num_skipped",
    "skipped_mask",
    "subset_indices",
    "to_rgb",
]
