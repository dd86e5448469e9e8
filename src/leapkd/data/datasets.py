"""The one entry point: ``build_dataset`` (a built-in name or an image-folder path)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from leapkd.data.builtin import BUILTINS, get_builtin, load_builtin
from leapkd.data.folder import ImageFolderDataset
from leapkd.data.image_files import ImageFiles
from leapkd.data.labeled import LabeledImages
from leapkd.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Augmentation, EvalTransform, Output, build_transform
from leapkd.data.unlabeled import is_glob, is_labelled_folder, unlabelled_images
from leapkd.errors import LeapkdError


class ArrayDataset(Dataset):
    """Grey uint8 images (N, H, W) with labels; yields (transform(image), int label)."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        classes: list[str],
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        self.images = images
        self.targets: list[int] = [int(t) for t in labels]
        self.classes: list[str] = classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img = np.array(self.images[index])  # writable copy: the cached arrays are read-only
        return (self.transform(img) if self.transform is not None else img), self.targets[index]


class LabeledSubset(Dataset):
    """A subset of a labelled dataset that keeps ``.classes`` and ``.targets``."""

    def __init__(self, base: LabeledImages, indices: Sequence[int] | np.ndarray) -> None:
        self.base = base
        self.indices = [int(i) for i in indices]
        self.classes: list[str] = list(base.classes)
        base_targets = base.targets
        self.targets: list[int] = [int(base_targets[i]) for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.base[self.indices[index]]


def subset_indices(targets: Sequence[int] | np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``min(per_class, available)`` random items per class.

    Deterministic: the same targets, ``per_class`` and ``seed`` always give the same indices
    (numpy ``default_rng(seed)``, classes visited in increasing label order).
    """
    if per_class < 1:
        raise LeapkdError(f"subset_per_class must be at least 1, got {per_class}", "pass a positive number or None")
    t = np.asarray(targets)
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(t == c))[:per_class] for c in np.unique(t)]
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, dtype=np.int64)


def image_files(dataset: object) -> ImageFiles | None:
    """The file-backed dataset under any subset wrapper, or None (arrays in memory)."""
    while dataset is not None:
        if isinstance(dataset, ImageFiles):
            return dataset
        dataset = getattr(dataset, "base", None)
    return None


def skipped_mask(dataset: object) -> torch.Tensor | None:
    """The shared mask of unreadable images of a file-backed dataset, or None."""
    files = image_files(dataset)
    return files.skipped_mask if files is not None else None


def num_skipped(dataset: object) -> int:
    """How many distinct unreadable images the dataset met, in any worker process."""
    mask = skipped_mask(dataset)
    return int(mask.sum()) if mask is not None else 0


DEMO_IMAGES_PER_CLASS = 80  # a built-in dataset's default subset: the CPU demo


def images_per_class(data: str, subset_per_class: int | str | None) -> int | None:
    """The training subset size a run asks for: None means every image.

    "auto" is 80 for a built-in dataset (the demo) and every image of a folder; "all" (or
    None) is every image; a number is that many per class.
    """
    if subset_per_class == "auto":
        return DEMO_IMAGES_PER_CLASS if data in BUILTINS else None
    if subset_per_class in ("all", None):
        return None
    return int(subset_per_class)


def _file_dataset(source: str, split: str, transform: Callable[[Any], Any]) -> ImageFiles:
    """A labelled folder's split, or unlabelled images (which have no validation split)."""
    if is_labelled_folder(Path(source).expanduser()):
        return ImageFolderDataset(source, split, transform)
    if split != "train":
        raise LeapkdError(
            f"{source} holds unlabelled images, so it has no '{split}' split to evaluate on",
            "evaluate on a labelled set (a built-in dataset or a folder with train/<class>/ and val/<class>/): "
            "`eval_data` for a run, `data` for leapkd eval",
        )
    return _unlabelled(source, transform)


def _unlabelled(source: str, transform: Callable[[Any], Any]) -> ImageFiles:
    images = unlabelled_images(source)
    return ImageFiles(images, np.full(len(images), -1, dtype=np.int64), [], transform, where=source)


def _looks_like_path(s: str) -> bool:
    return any(c in s for c in ("/", "\\")) or s.startswith((".", "~")) or Path(s).expanduser().exists()


def build_dataset(
    name_or_path: str,
    split: Literal["train", "val"],
    image_size: int,
    augment: bool,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    subset_per_class: int | None = None,
    seed: int = 0,
    root: str | None = None,
    index: Path | None = None,
    augmentation: Augmentation | None = None,
    output: Output = "float",
    eval_transform: EvalTransform = "resize",
) -> LabeledImages:
    """A dataset of (float32 tensor 3 x S x S, int label) with ``.classes`` and ``.targets``.

    ``name_or_path`` is a built-in name (see ``builtin_datasets()``; ``root`` optionally
    points at a directory holding its files), a labelled image folder with ``train/`` and
    ``val/`` (one subfolder per class), or unlabelled images: any other folder (at any
    depth), a text file listing image paths, or a glob; unlabelled items have label -1 and
    ``.classes`` is empty. ``index``: a saved image list (`ImageFiles.save_index`) read
    instead of scanning, so a resumed run sees exactly the images it started with.
    ``augment`` selects the random training transform `augmentation` (False: deterministic
    resize, or `eval_transform`); ``output`` "uint8" leaves scaling and normalising to `normalize`, on the device.
    ``subset_per_class`` keeps ``min(n, available)`` images per class, chosen with ``seed``:
    the same seed gives the same images every time.
    """
    transform = build_transform(
        image_size, augment, mean=mean, std=std, augmentation=augmentation, output=output, eval_transform=eval_transform
    )
    dataset: LabeledImages
    if name_or_path in BUILTINS:
        images, labels, classes = load_builtin(name_or_path, split, root=root)
        dataset = ArrayDataset(images, labels, classes, transform)
    elif index is not None and index.is_file():
        dataset = ImageFiles.from_index(index, transform)
    elif _looks_like_path(name_or_path) or is_glob(name_or_path):
        dataset = _file_dataset(name_or_path, split, transform)
    else:
        get_builtin(name_or_path)  # raises "unknown dataset ...; did you mean ...?"
        raise AssertionError("unreachable")
    if subset_per_class is not None:
        if not dataset.classes:
            raise LeapkdError(
                f"subset_per_class {subset_per_class} needs class labels, and {name_or_path} has none",
                "use `subset_per_class` all (or auto) with unlabelled images",
            )
        dataset = LabeledSubset(dataset, subset_indices(dataset.targets, subset_per_class, seed))
    return dataset
