"""Datasets (built-in and image folders) and transforms; start with ``build_dataset``."""

from leapkd.data.builtin import DatasetInfo, builtin_datasets, load_builtin
from leapkd.data.datasets import (
    ArrayDataset,
    LabeledSubset,
    build_dataset,
    image_files,
    images_per_class,
    num_skipped,
    skipped_mask,
    subset_indices,
)
from leapkd.data.folder import ImageFolderDataset
from leapkd.data.image_files import IMAGE_EXTENSIONS, ImageFiles, ImageList, load_image, to_rgb, walk_images
from leapkd.data.labeled import LabeledImages
from leapkd.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Augmentation, build_transform, normalize
from leapkd.data.unlabeled import unlabelled_images

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "ArrayDataset",
    "Augmentation",
    "DatasetInfo",
    "ImageFiles",
    "ImageFolderDataset",
    "ImageList",
    "LabeledImages",
    "LabeledSubset",
    "build_dataset",
    "build_transform",
    "image_files",
    "images_per_class",
    "builtin_datasets",
    "load_builtin",
    "load_image",
    "normalize",
    "num_skipped",
    "skipped_mask",
    "subset_indices",
    "to_rgb",
    "unlabelled_images",
    "walk_images",
]
