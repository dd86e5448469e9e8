"""Datasets (built-in and image folders) and transforms; start with ``build_dataset``."""

from leapkd.data.builtin import DatasetInfo, builtin_datasets, load_builtin
from leapkd.data.datasets import ArrayDataset, LabeledSubset, build_dataset, subset_indices
from leapkd.data.folder import IMAGE_EXTENSIONS, ImageFolderDataset, load_image, to_rgb
from leapkd.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "ArrayDataset",
    "DatasetInfo",
    "ImageFolderDataset",
    "LabeledSubset",
    "build_dataset",
    "build_transform",
    "builtin_datasets",
    "load_builtin",
    "load_image",
    "subset_indices",
    "to_rgb",
]
