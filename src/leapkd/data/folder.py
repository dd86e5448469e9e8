"""Image-folder dataset: ``root/{train,val}/<class>/<image>``, classes sorted by name.

The class list comes from ``train/`` (so labels agree between splits); ``val/`` may lack a
class but may not add one. Unreadable images are found on load, not at scan time (decoding
a whole folder up front is too slow for ImageNet-sized data): the next readable image is
returned instead, the bad file is recorded in ``.skipped`` and one warning is emitted per
dataset object (per DataLoader worker process).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from leapkd.errors import LeapkdError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SPLITS = ("train", "val")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL image to 8-bit RGB.

    16-bit/32-bit integer greyscale is scaled to 0..255 (divided by 257), never clipped;
    'I' images whose values all fit in 0..255 are kept as they are. Transparent images
    (RGBA, LA, palette with transparency) are composited over white. EXIF rotation applied.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I;16") or img.mode == "I":
        a: np.ndarray = np.asarray(img).astype(np.int64)
        if img.mode.startswith("I;16") or a.max(initial=0) > 255:
            a = np.clip(a, 0, 65535) // 257
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if a.max(initial=0.0) <= 1.0:
            a = a * 255.0
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Open, fully decode and convert an image file to RGB (raises on corrupt files)."""
    with Image.open(path) as img:
        img.load()
        return to_rgb(img)


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(class_dir: Path) -> list[Path]:
    return sorted(
        p for p in class_dir.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith(".")
    )  # fmt: skip


def scan_folder(root: str | Path, split: str) -> tuple[list[str], list[tuple[Path, int]]]:
    """(sorted class names, [(image path, label)]) of one split, with clear errors."""
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
    samples: list[tuple[Path, int]] = []
    empty: list[str] = []
    for label, name in enumerate(classes):
        class_dir = root / split / name
        if not class_dir.is_dir():
            continue
        files = _images_in(class_dir)
        if not files:
            empty.append(name)
        samples += [(f, label) for f in files]
    if not samples:
        raise LeapkdError(
            f"no images found in {root / split}",
            f"put image files with one of these extensions in its class folders: {accepted}",
        )
    if empty:
        raise LeapkdError(
            f"class folder(s) with no images in {root / split}: {', '.join(empty)}",
            f"add images ({accepted}) to them or remove the empty folders",
        )
    return classes, samples


class ImageFolderDataset(Dataset):
    """One split of an image folder; yields (transform(rgb PIL image), label)."""

    def __init__(self, root: str | Path, split: str, transform: Callable[[Image.Image], Any] | None = None) -> None:
        self.root = Path(root).expanduser()
        self.split = split
        self.classes, self.samples = scan_folder(self.root, split)
        self.targets = [label for _, label in self.samples]
        self.transform = transform
        # shared with worker processes (fork or spawn), so their findings reach this process
        self.skipped_mask = torch.zeros(len(self.samples), dtype=torch.bool).share_memory_()
        self._warned = False

    @property
    def num_skipped(self) -> int:
        """How many distinct unreadable images were met (and replaced) so far, in any worker."""
        return int(self.skipped_mask.sum())

    @property
    def skipped(self) -> list[Path]:
        """The unreadable images met so far."""
        return [self.samples[i][0] for i in self.skipped_mask.nonzero().flatten().tolist()]

    def __len__(self) -> int:
        return len(self.samples)

    def _skip(self, index: int, path: Path, err: Exception) -> None:
        self.skipped_mask[index] = True
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"unreadable image skipped: {path} ({type(err).__name__}: {err}); "
                f"further unreadable images in {self.root / self.split} are skipped silently, "
                "see dataset.num_skipped / dataset.skipped for the count and the list",
                RuntimeWarning,
                stacklevel=3,
            )

    def __getitem__(self, index: int) -> tuple[Any, int]:
        n = len(self.samples)
        for step in range(n):
            i = (index + step) % n
            path, label = self.samples[i]
            if self.skipped_mask[i]:
                continue
            try:
                img = load_image(path)
            except Exception as err:  # noqa: BLE001 - any decoder failure means "unreadable"
                self._skip(i, path, err)
                continue
            return (self.transform(img) if self.transform is not None else img), label
        raise LeapkdError(
            f"no readable image in {self.root / self.split} ({self.num_skipped} unreadable)",
            "check the files: they may be corrupt or not images at all",
        )
