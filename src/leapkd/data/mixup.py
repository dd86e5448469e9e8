"""Mixup as the LEAP reference applies it: every batch, images only (no labels involved).

`x = lam * x + (1 - lam) * x[perm]` with one `lam ~ U(0, 1)` per batch and `perm` a random
permutation of the batch, both drawn from torch's global generator (seeded, and restored
on resume). Teacher and student see the same mixed images.
"""

from __future__ import annotations

import torch
from torch import Tensor


def mix_images(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(B, C, H, W) -> the batch mixed with a shuffled copy of itself."""
    lam = torch.rand((), generator=generator).item()
    perm = torch.randperm(images.shape[0], generator=generator).to(images.device)
    return lam * images + (1.0 - lam) * images[perm]
