"""Images read from files: a compact path list, decoding to RGB, and the dataset over them.

`ImageList` holds paths relative to a root as one UTF-8 blob plus an offset array (about
the bytes of the names, instead of a Python object per path: ~50 MB for ImageNet-1k's
1.28M files rather than ~250 MB), and saves to / loads from one `.npz` file so a run keeps
the exact list it started with.

`ImageFiles` yields (transform(image), label) for such a list (label -1 when unlabelled).
Unreadable images are found on load, not at scan time (decoding a whole folder up front is
too slow for ImageNet-sized data): the next readable image is returned instead, the bad
file is marked in a shared-memory mask (one byte per image, seen by every DataLoader
worker process, so `num_skipped` counts each bad file once across workers) and one
warning is emitted per dataset object (per worker process).
"""

from __future__ import annotations

import os
import warnings
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from leapkd.disk import write_atomic
from leapkd.errors import LeapkdError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


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


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def walk_images(directory: Path, prefix: str = "") -> Iterator[str]:
    """Image files under `directory` at any depth, as `prefix` + relative names, in a fixed
    order (names sorted within each directory, subdirectories after files). One `scandir`
    per directory and no `stat` per file (the directory entry's type is enough); hidden
    files and directories are left out. A generator: one directory's entries in memory."""
    stack = [(directory, prefix)]
    while stack:
        here, rel = stack.pop()
        with os.scandir(here) as entries:
            listed = sorted(entries, key=lambda e: e.name)
        yield from (rel + e.name for e in listed if is_image_name(e.name) and e.is_file())
        subdirs = [e for e in listed if not e.name.startswith(".") and e.is_dir()]
        stack += [(Path(e.path), f"{rel}{e.name}/") for e in reversed(subdirs)]


class ImageList:
    """Paths relative to `root`, stored as one blob and offsets; `[i]` is the absolute Path."""

    def __init__(
        self,
        root: str | Path,
        names: Iterable[str] = (),
        blob: bytes | bytearray | None = None,
        offsets: np.ndarray | None = None,
    ) -> None:
        self.root = Path(root)
        if blob is None or offsets is None:  # packed as they come: no list of all the names
            packed, lengths = bytearray(), array("q")
            for name in names:
                encoded = name.encode()
                packed += encoded
                lengths.append(len(encoded))
            offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
            offsets[1:] = np.cumsum(np.frombuffer(lengths, dtype=np.int64))
            blob = packed  # a bytearray reads like bytes; no copy
        self.blob, self.offsets = blob, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def name(self, index: int) -> str:
        return self.blob[self.offsets[index] : self.offsets[index + 1]].decode()

    def __getitem__(self, index: int) -> Path:
        return self.root / self.name(index)

    @property
    def nbytes(self) -> int:
        """Memory held by the list itself (blob and offsets)."""
        return len(self.blob) + self.offsets.nbytes

    def save(self, path: Path, **arrays: np.ndarray) -> None:
        """Write the list (and extra arrays, e.g. labels) to `path` (.npz), atomically."""
        blob = np.frombuffer(self.blob, dtype=np.uint8)
        arrays = {"root": np.array(str(self.root)), "blob": blob, "offsets": self.offsets, **arrays}
        write_atomic(path, lambda f: np.savez(f, allow_pickle=False, **arrays))

    @staticmethod
    def load(path: Path) -> tuple[ImageList, dict[str, np.ndarray]]:
        """The list and the extra arrays `save` wrote."""
        with np.load(path) as f:
            extra = {k: f[k] for k in f.files if k not in ("root", "blob", "offsets")}
            return ImageList(str(f["root"]), blob=f["blob"].tobytes(), offsets=f["offsets"]), extra


class ImageFiles(Dataset):
    """(transform(rgb PIL image), label) over an `ImageList`; label -1 for unlabelled images."""

    def __init__(
        self,
        images: ImageList,
        labels: Sequence[int] | np.ndarray,
        classes: list[str],
        transform: Callable[[Image.Image], Any] | None = None,
        where: str = "",
    ) -> None:
        if len(labels) != len(images):
            raise ValueError(f"{len(labels)} labels for {len(images)} images")
        self.images = images
        self.targets = [int(t) for t in labels]
        self.classes = classes
        self.transform = transform
        self.where = where or str(images.root)  # for messages
        # shared with worker processes (fork or spawn), so their findings reach this process
        self.skipped_mask = torch.zeros(len(images), dtype=torch.bool).share_memory_()
        self._warned = False

    @property
    def num_skipped(self) -> int:
        """How many distinct unreadable images were met (and replaced) so far, in any worker."""
        return int(self.skipped_mask.sum())

    @property
    def skipped(self) -> list[Path]:
        """The unreadable images met so far."""
        return [self.images[i] for i in self.skipped_mask.nonzero().flatten().tolist()]

    def __len__(self) -> int:
        return len(self.images)

    def save_index(self, path: Path) -> None:
        """Write the image list, labels and classes, so a resumed run reads the same images."""
        self.images.save(
            path, labels=np.asarray(self.targets, dtype=np.int64), classes=np.array(self.classes, dtype=str)
        )

    @staticmethod
    def from_index(path: Path, transform: Callable[[Image.Image], Any] | None = None) -> ImageFiles:
        images, extra = ImageList.load(path)
        classes = [str(c) for c in extra["classes"].tolist()]
        return ImageFiles(images, extra["labels"], classes, transform, where=str(images.root))

    def _skip(self, index: int, path: Path, err: Exception) -> None:
        self.skipped_mask[index] = True
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"unreadable image skipped: {path} ({type(err).__name__}: {err}); "
                f"further unreadable images in {self.where} are skipped silently, "
                "see dataset.num_skipped / dataset.skipped for the count and the list",
                RuntimeWarning,
                stacklevel=3,
            )

    def __getitem__(self, index: int) -> tuple[Any, int]:
        n = len(self.images)
        for step in range(n):
            i = (index + step) % n
            if self.skipped_mask[i]:
                continue
            path = self.images[i]
            try:
                img = load_image(path)
            except Exception as err:  # noqa: BLE001 - any decoder failure means "unreadable"
                self._skip(i, path, err)
                continue
            return (self.transform(img) if self.transform is not None else img), self.targets[i]
        raise LeapkdError(
            f"no readable image in {self.where} ({self.num_skipped} unreadable)",
            "check the files: they may be corrupt or not images at all",
        )
