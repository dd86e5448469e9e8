"""Images without labels: a folder at any depth, a text file listing paths, or a glob.

Distillation needs no labels; evaluation does (`eval_data`). A folder with `train/` or
`val/` subfolders is a labelled folder (`folder.py`); any other folder is read as
unlabelled images at any depth.
"""

from __future__ import annotations

import glob
import random
from pathlib import Path

from leapkd.data.image_files import IMAGE_EXTENSIONS, ImageList, is_image_name, walk_images
from leapkd.errors import LeapkdError

LIST_SUFFIXES = (".txt", ".lst", ".list")
CHECKED = 10_000
_ACCEPTED = ", ".join(IMAGE_EXTENSIONS)


def is_glob(source: str) -> bool:
    return any(c in source for c in "*?[")


def is_labelled_folder(path: Path) -> bool:
    return path.is_dir() and any((path / split).is_dir() for split in ("train", "val"))


def unlabelled_images(source: str) -> ImageList:
    """The image list of a folder (any depth), a list file or a glob; clear errors when empty."""
    if is_glob(source):
        return _globbed(source)
    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        return _listed(path)
    if not path.exists():
        raise LeapkdError(
            f"dataset path {path} does not exist",
            "give a folder of images (any depth), a folder with train/<class>/ and val/<class>/, "
            "a .txt file listing image paths, or a glob such as 'photos/**/*.jpg'",
        )
    if not path.is_dir():
        raise LeapkdError(
            f"dataset path {path} is neither a folder nor a list of images ({', '.join(LIST_SUFFIXES)})",
            "give a folder, a text file with one image path per line, or a glob",
        )
    if not any(path.iterdir()):
        raise LeapkdError(
            f"dataset folder {path} is empty",
            "put images in it (at any depth), or class folders train/<class>/ and val/<class>/ for labels",
        )
    images = ImageList(path, walk_images(path))
    if not len(images):
        raise LeapkdError(
            f"no image files under {path}", f"put images ({_ACCEPTED}) in it, at any depth; other files are ignored"
        )
    return images


def _globbed(pattern: str) -> ImageList:
    matches = sorted(
        p for p in glob.glob(str(Path(pattern).expanduser()), recursive=True) if is_image_name(Path(p).name)
    )
    if not matches:
        raise LeapkdError(
            f"the pattern '{pattern}' matches no image file",
            f"check the pattern (images: {_ACCEPTED}; ** for any depth)",
        )
    root = Path(*Path(pattern).expanduser().parts[: _first_glob_part(Path(pattern).expanduser().parts)])
    return ImageList(root, (str(Path(m).relative_to(root)) for m in matches))


def _first_glob_part(parts: tuple[str, ...]) -> int:
    return next(i for i, part in enumerate(parts) if is_glob(part))


def _listed(path: Path) -> ImageList:
    """A text file with one image path per line (relative to the file's folder, or absolute).

    Existence is checked for every path of a list up to `CHECKED` lines, else for a seeded
    sample of that many (a stat per file is slow for millions on a network disk); a file
    that vanishes later is skipped and counted like an unreadable image.
    """
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    names = [ln for ln in lines if ln and not ln.startswith("#")]
    base = path.parent
    sample = names if len(names) <= CHECKED else random.Random(0).sample(names, CHECKED)
    missing = [n for n in sample if not (base / n).is_file()]
    if missing:
        checked = "" if len(sample) == len(names) else f" (of {len(sample)} checked)"
        raise LeapkdError(
            f"{len(missing)} of the {len(names)} paths listed in {path} do not exist{checked}, e.g. {missing[0]}",
            f"fix or remove those lines (relative paths start from {base})",
        )
    if not names:
        raise LeapkdError(f"{path} lists no image paths", "write one image path per line")
    return ImageList(base, names)
