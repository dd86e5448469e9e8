"""Image-folder dataset: ``root/{train,val}/<class>/<image>``, classes sorted by name.

The class list comes from ``train/`` (so labels agree between splits); ``val/`` may lack a
class but may not add one. Unreadable images are found on load, not at scan time (decoding
a whole folder up front is too slow for ImageNet-sized data): the next readable image is
returned instead, the bad file is recorded in ``.skipped`` and one warning is emitted per
dataset object (per DataLoader worker process).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from leapkd.data.image_files import IMAGE_EXTENSIONS, ImageFiles, ImageList, walk_images
from leapkd.errors import LeapkdError

SPLITS = ("train", "val")


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_folder(root: str | Path, split: str) -> tuple[list[str], list[str], list[int]]:
    """(sorted class names, image names relative to root/split, their labels) of one split,
    with clear errors."""
    root = Path(root).expanduser()
    accepted = ", ".join(IMAGE_EXTENSIONS)
    layout = "root/train/<class>/<image> and root/val/<class>/<image>"
    if split not in SPLITS:
        raise LeapkdError(f"unknown split '{split}'", "use split='train' or split='val'")
    if not root.exists():
        raise LeapkdError(
            f"dataset path {root} does not exist", f"check the path; a folder dataset is laid out as {layout}"
        )
    if not root.is_dir():
        raise LeapkdError(f"dataset path {root} is not a directory", f"give a folder laid out as {layout}")
    if not any(root.iterdir()):
        raise LeapkdError(f"dataset folder {root} is empty", f"put images in it laid out as {layout}")
    present = [s for s in SPLITS if (root / s).is_dir()]
    if split not in present:
        found = ", ".join(f"{s}/" for s in present) or "neither train/ nor val/"
        raise LeapkdError(
            f"dataset folder {root} has no '{split}/' subfolder (found {found})",
            f"create {root / split} with one subfolder of images per class ({layout})",
        )
    reference = root / ("train" if "train" in present else split)
    classes = _class_dirs(reference)
    if not classes:
        raise LeapkdError(
            f"{reference} has no class folders",
            f"make one subfolder per class holding images ({accepted}): {layout}",
        )
    extra = sorted(set(_class_dirs(root / split)) - set(classes))
    if extra:
        raise LeapkdError(
            f"{root / split} has class folders missing from {reference}: {', '.join(extra)}",
            "give every split the same class folders (the class list is taken from train/)",
        )
    names: list[str] = []
    labels: list[int] = []
    empty: list[str] = []
    for label, name in enumerate(classes):
        class_dir = root / split / name
        if not class_dir.is_dir():
            continue
        files = list(walk_images(class_dir, prefix=f"{name}/"))
        if not files:
            empty.append(name)
        names += files
        labels += [label] * len(files)
    if not names:
        raise LeapkdError(
            f"no images found in {root / split}",
            f"put image files with one of these extensions in its class folders: {accepted}",
        )
    if empty:
        raise LeapkdError(
            f"class folder(s) with no images in {root / split}: {', '.join(empty)}",
            f"add images ({accepted}) to them or remove the empty folders",
        )
    return classes, names, labels


class ImageFolderDataset(ImageFiles):
    """One split of a labelled image folder; yields (transform(rgb PIL image), label)."""

    def __init__(self, root: str | Path, split: str, transform: Callable[[Image.Image], Any] | None = None) -> None:
        self.root = Path(root).expanduser()
        self.split = split
        classes, names, labels = scan_folder(self.root, split)
        base = self.root / split
        super().__init__(ImageList(base, names), labels, classes, transform, where=str(base))
