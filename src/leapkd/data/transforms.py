"""Image transforms: any image -> (3, S, S), as uint8 (normalised later, on the device) or
float32 normalised with the teacher's statistics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from timm.data import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from timm.data import IMAGENET_DEFAULT_STD as IMAGENET_STD
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from leapkd.errors import LeapkdError

Output = Literal["float", "uint8"]
EvalTransform = Literal["resize", "center-crop"]
Interpolation = Literal["bilinear", "bicubic"]
CENTER_CROP_FRACTION = 224 / 256  # "center-crop": resize the short side to S * 256 / 224, keep the central S


@dataclass(frozen=True)
class Augmentation:
    """The random training transform. The defaults are the demo's: a resized crop of 50-100%
    of the image and a horizontal flip; colour jitter, grayscale and blur are off.

    The crop scale is milder than ImageNet's (0.08, 1.0) because the built-in images are
    28x28 with the object filling the frame: an 8% crop of a 28 px image is ~8 px and rarely
    shows the class. `jitter` is (brightness, contrast, saturation, hue), applied with
    probability `jitter_p`; blur is Gaussian with a sigma drawn from `blur_sigma`.
    """

    crop_scale: tuple[float, float] = (0.5, 1.0)
    flip_p: float = 0.5
    jitter_p: float = 0.0
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    grayscale_p: float = 0.0
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    randaugment: str | None = None  # a timm RandAugment string, e.g. "rand-m9-mstd0.5-inc1"
    interpolation: Interpolation = "bilinear"  # of the crop and RandAugment's geometric operations

    def geometry(self, image_size: int) -> list[v2.Transform]:
        """The geometric and photometric steps, on uint8 images."""
        mode = v2.InterpolationMode.BICUBIC if self.interpolation == "bicubic" else v2.InterpolationMode.BILINEAR
        steps: list[v2.Transform] = [
            v2.RandomResizedCrop(image_size, scale=self.crop_scale, interpolation=mode, antialias=True)
        ]
        if self.flip_p > 0:
            steps.append(v2.RandomHorizontalFlip(self.flip_p))
        return steps

    def photometric(self, image_size: int) -> list[v2.Transform]:
        """RandAugment (on a PIL image, as timm applies it) and colour steps, after the image is RGB."""
        steps: list[v2.Transform] = []
        if self.randaugment:
            steps += [v2.ToPILImage(), randaugment(self.randaugment, image_size, self.interpolation), v2.ToImage()]
        if self.jitter_p > 0:
            steps.append(v2.RandomApply([v2.ColorJitter(*self.jitter)], p=self.jitter_p))
        if self.grayscale_p > 0:
            steps.append(v2.RandomGrayscale(self.grayscale_p))
        if self.blur_p > 0:
            kernel = max(3, (image_size // 10) | 1)  # odd, about a tenth of the image
            steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=self.blur_sigma)], p=self.blur_p))
        return steps


def randaugment(config: str, image_size: int, interpolation: Interpolation = "bilinear") -> Any:
    """timm's RandAugment from its config string (fill: the ImageNet mean, translations up to 45%,
    magnitudes at most 9.99, `interpolation` for its rotations, shears and translations)."""
    from PIL import Image
    from timm.data.auto_augment import rand_augment_transform

    # magnitudes (with their noise) stop just below timm's 10: at 10 its increasing posterize keeps 0 bits,
    # which Pillow refuses; 9.99 keeps 1
    resample = Image.Resampling.BICUBIC if interpolation == "bicubic" else Image.Resampling.BILINEAR
    hparams = {
        "translate_const": int(image_size * 0.45),
        "img_mean": tuple(round(255 * m) for m in IMAGENET_MEAN),
        "magnitude_max": 9.99,
        "interpolation": resample,
    }
    try:
        return rand_augment_transform(config, hparams)
    except (AssertionError, ValueError, KeyError, IndexError) as err:
        raise LeapkdError(
            f"aug_randaugment '{config}' is not a timm RandAugment string ({err})",
            "write it as timm does, e.g. rand-m9-mstd0.5-inc1 (m: magnitude, mstd: its noise, n: ops)",
        ) from None


def build_transform(
    image_size: int,
    augment: bool,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    augmentation: Augmentation | None = None,
    output: Output = "float",
    eval_transform: EvalTransform = "resize",
) -> Callable[[Any], torch.Tensor]:
    """Transform from a PIL image, HxW(xC) uint8 array or CxHxW tensor to (3, S, S).

    Grey images become 3 identical channels. With ``augment=False`` the transform is
    deterministic: `eval_transform` "resize" resizes the short side to S, then centre-crops
    S (a plain resize for square images); "center-crop" resizes the short side to
    int(S * 256 / 224) (bicubic) and keeps the central S x S (the LEAP reference's eval
    transform). With ``augment=True`` it is `augmentation` (default: the demo's).
    ``output="uint8"`` stops before scaling and normalising (`normalize` does both, on the
    device, for a whole batch); "float" gives float32 normalised with `mean`, `std`.
    """
    aug = augmentation or Augmentation()
    if augment:
        geometry = aug.geometry(image_size)
        colour = aug.photometric(image_size)
    else:
        geometry, colour = _deterministic(image_size, eval_transform), []
    steps: list[v2.Transform] = [
        v2.ToImage(),
        *geometry,
        v2.RGB(),  # after the geometry: a grey image is resized once, not three times
        *colour,
    ]
    if output == "float":
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]
    return v2.Compose([*steps, v2.ToPureTensor()])


def _deterministic(image_size: int, kind: EvalTransform) -> list[v2.Transform]:
    if kind == "center-crop":
        resized = int(image_size / CENTER_CROP_FRACTION)
        return [
            v2.Resize(resized, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.CenterCrop(image_size),
        ]
    return [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]


def normalize(images: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """uint8 (B, 3, S, S) -> float32 normalised, with the same operations as the "float"
    transform (so both give the same numbers); float input is returned as it is. `mean` and
    `std` may be float32 tensors on the images' device already (on a GPU a list would be
    copied to it at every call, each copy waiting for the device)."""
    if images.is_floating_point():
        return images
    scaled = TF.to_dtype(images, torch.float32, scale=True)
    shift = torch.as_tensor(mean, dtype=torch.float32, device=scaled.device).view(-1, 1, 1)
    scale = torch.as_tensor(std, dtype=torch.float32, device=scaled.device).view(-1, 1, 1)
    return scaled.sub(shift).div_(scale)  # torchvision's normalize_image


class Normalize:
    """`normalize` with fixed statistics, kept as tensors on the device of the last images seen."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = list(mean), list(std)
        self._stats: tuple[Tensor, Tensor] | None = None

    def __call__(self, images: Tensor) -> Tensor:
        if self._stats is None or self._stats[0].device != images.device:
            self._stats = (torch.tensor(self.mean, device=images.device), torch.tensor(self.std, device=images.device))
        return normalize(images, *self._stats)
