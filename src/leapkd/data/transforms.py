"""Image transforms: any image -> float32 tensor (3, S, S), normalised with the teacher's stats."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_transform(
    image_size: int,
    augment: bool,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop_scale: tuple[float, float] = (0.5, 1.0),
    hflip: bool = True,
) -> Callable[[Any], torch.Tensor]:
    """Transform from a PIL image, HxW(xC) uint8 array or CxHxW tensor to (3, S, S) float32.

    Grey images become 3 identical channels. With ``augment=False`` the transform is
    deterministic: resize the short side to S, then centre-crop S (a plain resize for
    square images). With ``augment=True``: RandomResizedCrop(S, scale=crop_scale) and,
    if ``hflip``, a random horizontal flip. The default crop scale (0.5, 1.0) is milder
    than ImageNet's (0.08, 1.0) because the built-in images are 28x28 with the object
    filling the frame: an 8% crop of a 28 px image is ~8 px and rarely shows the class.
    """
    if augment:
        geometry: list[v2.Transform] = [v2.RandomResizedCrop(image_size, scale=crop_scale, antialias=True)]
        if hflip:
            geometry.append(v2.RandomHorizontalFlip())
    else:
        geometry = [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
    return v2.Compose(
        [
            v2.ToImage(),
            *geometry,
            v2.RGB(),  # after the geometry: a grey image is resized once, not three times
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
            v2.ToPureTensor(),
        ]
    )
