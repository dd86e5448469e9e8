"""Augmentation of whole batches on the device, after normalisation: mixup and random erasing.

Mixup as the LEAP reference applies it: every batch, images only (no labels involved),
`x = lam * x + (1 - lam) * x[perm]` with one `lam ~ U(0, 1)` per batch and `perm` a random
permutation of the batch. Random erasing as DeiT applies it (timm's `RandomErasing`,
per-pixel normal noise in normalised space, probability `erasing` per image). Both draw
from the global generators (seeded, and restored on resume); teacher and student see
the same augmented images.
"""

from __future__ import annotations

import torch
from timm.data.random_erasing import RandomErasing
from torch import Tensor


def mix_images(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(B, C, H, W) -> the batch mixed with a shuffled copy of itself."""
    lam = torch.rand((), generator=generator).item()
    perm = torch.randperm(images.shape[0], generator=generator).to(images.device)
    return lam * images + (1.0 - lam) * images[perm]


class BatchAugment:
    """`mixup` then random erasing with probability `erasing` (0: off); identity when both are off."""

    def __init__(self, mixup: bool = False, erasing: float = 0.0) -> None:
        self.mixup, self.erasing = mixup, erasing

    def __call__(self, images: Tensor) -> Tensor:
        if self.mixup:
            images = mix_images(images)
        if self.erasing > 0:
            eraser = RandomErasing(probability=self.erasing, mode="pixel", device=str(images.device))
            images = eraser(images.clone())
        return images
