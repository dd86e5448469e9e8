"""Batched random erasing: the same boxes as timm's `RandomErasing` from the same Python
`random` state, filled with N(0, 1) noise in a fixed number of kernels."""

from __future__ import annotations

import random

import pytest
import torch
from timm.data.random_erasing import RandomErasing
from torch.overrides import TorchFunctionMode

from leapkd.data.batch_augment import BatchAugment, erase_boxes, erasing_boxes, random_erase


def _images(batch: int, height: int, width: int) -> torch.Tensor:
    """Values in about [95, 105]: N(0, 1) noise never lands there, so erased pixels are < 50."""
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(1)) + 100


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "shape,probability",
    [((16, 32, 32), 0.5), ((16, 7, 9), 0.5), ((12, 24, 16), 1.0), ((32, 32, 32), 0.25)],
    ids=["16x32x32-p0.5", "tiny-images-many-failed-tries", "p1", "p0.25"],
)
def test_the_same_pixels_are_erased_as_by_timm_from_the_same_random_state(seed, shape, probability):
    images = _images(*shape)
    random.seed(seed)
    timm_out = RandomErasing(probability=probability, mode="pixel", device="cpu")(images.clone())
    timm_state = random.getstate()
    random.seed(seed)
    ours = random_erase(images, probability)
    assert random.getstate() == timm_state  # the same number of draws, so what follows is unchanged too
    erased = ours < 50
    assert torch.equal(erased, timm_out < 50)
    assert torch.equal(ours[~erased], images[~erased])  # everything else untouched
    assert erased.all(1).eq(erased.any(1)).all()  # a box spans every channel
    if probability < 1:
        chosen = erased.flatten(1).any(1)
        assert 0 < chosen.sum() < len(images)  # the seeds exercise both kinds of image


def test_the_boxes_follow_timms_draws_one_image_at_a_time():
    random.seed(3)
    boxes = erasing_boxes(16, 32, 32, 0.5)
    assert [i for i, *_ in boxes] == sorted({i for i, *_ in boxes})  # at most one box per image, in order
    for _, top, left, h, w in boxes:
        assert 0 <= top <= 32 - h and 0 <= left <= 32 - w and h < 32 and w < 32
        assert 0.02 * 1024 * 0.5 <= h * w <= 1024 / 3 * 1.5  # the area share, up to rounding of h and w


def test_the_noise_is_standard_normal_and_the_input_is_not_modified():
    images = torch.zeros(2, 3, 64, 64)
    out = erase_boxes(images, [(1, 2, 3, 60, 60)])
    box = out[1, :, 2:62, 3:63]
    assert abs(box.mean().item()) < 0.05 and abs(box.std().item() - 1) < 0.05  # 10,800 draws
    assert torch.count_nonzero(out[0]) == 0 and torch.count_nonzero(out[1]) == box.numel()
    assert torch.count_nonzero(images) == 0


class _CountTorchCalls(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def test_erasing_a_batch_takes_as_many_torch_calls_for_2_images_as_for_16():
    """A fixed number of kernels per batch (timm's loop makes a few per erased image)."""
    counts = []
    for batch in (2, 16):
        images = torch.zeros(batch, 3, 32, 32)
        random.seed(0)
        with _CountTorchCalls() as counter:
            out = BatchAugment(erasing=1.0)(images)
        assert torch.count_nonzero(out.flatten(1), dim=1).min() > 0  # every image was erased
        counts.append(counter.calls)
    assert counts[0] == counts[1]


def test_batch_augment_erases_a_copy_and_is_identity_when_off():
    images = _images(4, 16, 16)
    assert torch.equal(BatchAugment()(images), images)
    random.seed(0)
    out = BatchAugment(erasing=1.0)(images)
    assert (out < 50).flatten(1).any(1).all() and (images > 50).all()
