"""Augmentation of whole batches on the device, after normalisation: mixup and random erasing.

Mixup as the LEAP reference applies it: every batch, images only (no labels involved),
`x = lam * x + (1 - lam) * x[perm]` with one `lam ~ U(0, 1)` per batch and `perm` a random
permutation of the batch. Random erasing as DeiT applies it (timm's `RandomErasing` with
`mode="pixel"`: per-pixel normal noise in normalised space, probability `erasing` per
image, one box of 2% to 1/3 of the image with a log-uniform aspect ratio in [0.3, 1/0.3],
up to 10 tries), batched: the boxes come from the same Python `random` draws, in the same
order, as timm's (the same images get the same boxes from the same state), and all boxes
are then filled in a fixed number of kernels instead of a few per erased image. Only the
noise values differ from timm's (one draw over the batch; same distribution). Both draw
from the global generators (seeded, and restored on resume); teacher and student see the
same augmented images.
"""

from __future__ import annotations

import math
import random

import torch
from torch import Tensor

ERASE_AREA = (0.02, 1 / 3)  # timm's min_area, max_area: the box's share of the image
ERASE_MIN_ASPECT = 0.3  # timm's min_aspect; the largest is its inverse
ERASE_ATTEMPTS = 10

Box = tuple[int, int, int, int, int]  # (image, top, left, height, width)


def mix_images(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(B, C, H, W) -> the batch mixed with a shuffled copy of itself."""
    lam = torch.rand((), generator=generator).item()
    perm = torch.randperm(images.shape[0], generator=generator).to(images.device, non_blocking=True)
    return lam * images + (1.0 - lam) * images[perm]


def erasing_boxes(batch: int, height: int, width: int, probability: float) -> list[Box]:
    """The box erased in each chosen image of a batch, drawn from Python's `random` exactly as
    timm's `RandomErasing(probability, mode="pixel")` draws them (count 1), image by image.

    An image is chosen unless `random.random() > probability`; a chosen image whose 10 tries
    all give a box too big for it stays as it is.
    """
    area = height * width
    log_aspect = (math.log(ERASE_MIN_ASPECT), math.log(1 / ERASE_MIN_ASPECT))
    boxes = []
    for i in range(batch):
        if random.random() > probability:
            continue
        for _ in range(ERASE_ATTEMPTS):
            target_area = random.uniform(*ERASE_AREA) * area
            aspect = math.exp(random.uniform(*log_aspect))
            h = int(round(math.sqrt(target_area * aspect)))
            w = int(round(math.sqrt(target_area / aspect)))
            if w < width and h < height:
                top = random.randint(0, height - h)
                left = random.randint(0, width - w)
                boxes.append((i, top, left, h, w))
                break
    return boxes


def erase_boxes(images: Tensor, boxes: list[Box]) -> Tensor:
    """A copy of (B, C, H, W) `images` with each box filled with per-pixel N(0, 1) noise (at most
    one box per image), in a fixed number of kernels whatever the number of boxes."""
    if not boxes:
        return images.clone()
    batch, _, height, width = images.shape
    spans = [[0] * batch for _ in range(4)]  # top, bottom, left, right (exclusive); empty by default
    for i, top, left, h, w in boxes:
        spans[0][i], spans[1][i], spans[2][i], spans[3][i] = top, top + h, left, left + w
    top, bottom, left, right = torch.tensor(spans).to(images.device, non_blocking=True)[:, :, None]  # one copy, no wait
    rows = torch.arange(height, device=images.device)
    cols = torch.arange(width, device=images.device)
    in_rows = (rows >= top) & (rows < bottom)  # (B, H)
    in_cols = (cols >= left) & (cols < right)  # (B, W)
    inside = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # (B, 1, H, W)
    noise = torch.empty_like(images).normal_()
    return torch.where(inside, noise, images)


def random_erase(images: Tensor, probability: float) -> Tensor:
    """(B, C, H, W) -> a copy with timm's random erasing (`mode="pixel"`), batched."""
    batch, _, height, width = images.shape
    return erase_boxes(images, erasing_boxes(batch, height, width, probability))


class BatchAugment:
    """`mixup` then random erasing with probability `erasing` (0: off); identity when both are off."""

    def __init__(self, mixup: bool = False, erasing: float = 0.0) -> None:
        self.mixup, self.erasing = mixup, erasing

    def __call__(self, images: Tensor) -> Tensor:
        if self.mixup:
            images = mix_images(images)
        if self.erasing > 0:
            images = random_erase(images, self.erasing)
        return images
