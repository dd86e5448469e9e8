"""The feature contract every backbone meets, whatever its family.

A backbone is an ordered list of **levels**, the units LEAP walks shallow to deep: the
transformer blocks of a ViT, DeiT, DINOv2, Eva or CaiT trunk, the blocks of a Swin across
its stages, the stages of a CNN. Each level has a width, a grid (its feature map's size
at the backbone's image size), a stride in pixels, and the prefix tokens it carries (CLS,
distillation token, registers; none for maps). Levels are numbered 1..L.

`forward_levels(images, [b...])` runs only as deep as the deepest level asked for
(early exit) and returns each level's `Features`, normalised by the family's rule
(`normalize`): the final norm of the family where its width matches, else a LayerNorm
over channels without learned parameters (see the family modules). `embedding` is the
pooled feature used for evaluation: the CLS token where the level has one, else the mean
over positions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from timm.data import IMAGENET_DEFAULT_STD as IMAGENET_STD
from torch import Tensor, nn

from leapkd.errors import LeapkdError

Pooling = Literal["cls", "avgpool"]


@dataclass(frozen=True)
class Level:
    """What one level produces at the backbone's image size."""

    width: int  # channels
    grid: tuple[int, int]  # (rows, columns) of its feature map
    stride: int  # input pixels per grid cell
    prefix: int  # prefix tokens (CLS first); 0 for a map


@dataclass
class Features:
    """One level's output for a batch: positions as tokens, plus the prefix tokens."""

    patches: Tensor  # (B, H*W, C), row-major over the grid
    grid: tuple[int, int]
    prefix: Tensor | None = None  # (B, K, C): CLS first, then distillation/register tokens

    @staticmethod
    def from_map(feature_map: Tensor, prefix: Tensor | None = None) -> Features:
        """From a (B, C, H, W) map."""
        b, c, h, w = feature_map.shape
        return Features(feature_map.flatten(2).transpose(1, 2), (h, w), prefix)

    def as_map(self) -> Tensor:
        """(B, C, H, W)."""
        b, n, c = self.patches.shape
        return self.patches.transpose(1, 2).reshape(b, c, *self.grid)

    def tokens(self) -> Tensor:
        """(B, K + H*W, C): prefix tokens first, as a ViT lays them out."""
        return self.patches if self.prefix is None else torch.cat([self.prefix, self.patches], dim=1)

    @property
    def cls(self) -> Tensor | None:
        """(B, C) CLS token, or None for a level without one."""
        return None if self.prefix is None else self.prefix[:, 0]

    def pooled(self, kind: Pooling = "cls") -> Tensor:
        """(B, C): the CLS token when `kind` is "cls" and there is one, else the mean over positions."""
        cls = self.cls
        return cls if kind == "cls" and cls is not None else self.patches.mean(dim=1)

    def resampled(self, grid: tuple[int, int]) -> Features:
        """The same features on another grid (bilinear over positions; the prefix unchanged)."""
        return Features(resample_patches(self.patches, self.grid, grid), (grid[0], grid[1]), self.prefix)

    def map_each(self, fn: Any) -> Features:
        """The same features with `fn` applied to the patch tokens and the prefix alike."""
        if self.prefix is None:
            return Features(fn(self.patches), self.grid)
        both = fn(torch.cat([self.prefix, self.patches], dim=1))
        k = self.prefix.shape[1]
        return Features(both[:, k:], self.grid, both[:, :k])


def channel_layer_norm(x: Tensor) -> Tensor:
    """LayerNorm over the last (channel) axis without learned parameters."""
    return F.layer_norm(x, (int(x.shape[-1]),))  # a constant width, so ONNX export can trace it


class Backbone(nn.Module):
    """A model seen through the feature contract; one subclass per family quirk.

    Subclasses set `levels` and implement `_run` (raw features of the asked levels, early
    exit) and `level_modules` (the module whose call completes each level, for counting).
    """

    family = "abstract"

    def __init__(
        self,
        model: nn.Module,
        name: str,
        levels: Sequence[Level],
        image_size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        build: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not levels:
            raise ValueError(f"{name}: the model has no levels")
        self.model = model
        self.name = name
        self.levels = list(levels)
        self.image_size = image_size
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.build = dict(build or {})  # how to rebuild it (student files): kwargs of the factory

    # ----- static facts -------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        return len(self.levels)

    @property
    def width(self) -> int:
        """The last level's width."""
        return self.levels[-1].width

    @property
    def grid(self) -> tuple[int, int]:
        """The last level's grid."""
        return self.levels[-1].grid

    @property
    def num_prefix_tokens(self) -> int:
        """Prefix tokens of the last level."""
        return self.levels[-1].prefix

    @property
    def patch_size(self) -> int | None:
        """The patch-embedding stride of token families (None for CNNs)."""
        return None

    def level_modules(self) -> list[nn.Module]:
        """Level b's completing module is entry b - 1."""
        raise NotImplementedError

    # ----- forwards -----------------------------------------------------------------
    def _run(self, images: Tensor, levels: list[int]) -> dict[int, Features]:
        """Un-normalised features of `levels` (sorted, 1-based), stopping after the deepest."""
        raise NotImplementedError

    def normalize(self, level: int, features: Features) -> Features:
        """The family's normalisation of one level's features (default: channel LayerNorm)."""
        return features.map_each(channel_layer_norm)

    def forward_levels(self, images: Tensor, levels: Iterable[int], norm: bool = True) -> dict[int, Features]:
        """Features of several levels in one pass, stopping after the deepest one asked for."""
        wanted = sorted(set(levels))
        for b in wanted:
            self.check_level(b)
        raw = self._run(self.as_input(images), wanted)
        return {b: self.normalize(b, f) for b, f in raw.items()} if norm else raw

    def forward_to(self, images: Tensor, level: int) -> Features:
        """Normalised features of `level`; levels after it are never run."""
        return self.forward_levels(images, [level])[level]

    def forward(self, images: Tensor) -> Tensor:
        """The last level's normalised tokens (B, K + H*W, C): the usual backbone output."""
        return self.forward_to(images, self.num_levels).tokens()

    def embedding(self, images: Tensor, level: int | None = None, kind: Pooling = "cls") -> Tensor:
        """(B, C) pooled features of a level (default: the last) for evaluation: the CLS token
        when `kind` is "cls" and the level has one, else the mean over positions."""
        return self.forward_to(images, level or self.num_levels).pooled(kind)

    def stem(self, images: Tensor) -> Features | None:
        """What the first level receives (a ViT's embedded tokens), where the family exposes it."""
        return None

    def patch_projection(self, images: Tensor) -> Features:
        """The raw patch-projection conv output on its grid, before position embedding."""
        raise LeapkdError(
            f"{self.name} ({self.family}) has no patch-projection conv, so the patch-embedding loss does not apply",
            "set `patch_embed_weight` 0 for this pair",
        )

    def as_input(self, images: Tensor) -> Tensor:
        """Images in the dtype of the weights (a teacher kept in bf16 takes float32 images)."""
        dtype = next(self.parameters()).dtype
        return images if images.dtype == dtype or not images.is_floating_point() else images.to(dtype)

    def check_level(self, level: int) -> None:
        if not 1 <= level <= self.num_levels:
            raise ValueError(f"{self.name}: level {level} is outside 1..{self.num_levels}")

    # ----- the model's own classifier ------------------------------------------------
    exposes_classifier = False  # whether timm's `forward_head` takes what `head_input` gives

    @property
    def num_classes(self) -> int:
        """Classes of the model's own classifier (`classify`); 0 when it has none or it is not exposed."""
        return int(getattr(self.model, "num_classes", 0) or 0) if self.exposes_classifier else 0

    def head_input(self, last: Features) -> Tensor:
        """What timm's `forward_head` of the model takes, from its raw last level: by default the
        normalised tokens, prefix first (ViT, DeiT, DINOv2, Eva, CaiT)."""
        return self.normalize(self.num_levels, last).tokens()

    def classify(self, last: Features) -> Tensor:
        """Logits of the model's own classifier from its last level, un-normalised (as
        `forward_levels(..., norm=False)` gives it): timm's `forward_head`, which pools."""
        if not self.num_classes:
            raise NotImplementedError(f"{self.name} ({self.family}) exposes no classifier")
        forward_head = cast(Callable[[Tensor], Tensor], self.model.forward_head)  # timm's, not a submodule
        return forward_head(self.head_input(last))

    def describe(self) -> dict[str, Any]:
        """Static facts as a plain dict (for summaries, student files and `leapkd models`)."""
        return {
            "name": self.name,
            "family": self.family,
            "levels": self.num_levels,
            "blocks": self.num_levels,  # the name earlier summaries used
            "embed_dim": self.width,
            "patch_size": self.patch_size,
            "image_size": self.image_size,
            "grid": list(self.grid),
            "prefix_tokens": self.num_prefix_tokens,
            "level_widths": sorted({lv.width for lv in self.levels}),
            "build": self.build,
            "params": sum(p.numel() for p in self.parameters()),
        }


def freeze(backbone: Backbone) -> Backbone:
    """Eval mode and no gradients (for teachers)."""
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone


def resample_patches(patches: Tensor, grid: tuple[int, int], target: tuple[int, int]) -> Tensor:
    """(B, H*W, C) tokens on `grid` bilinearly resampled to `target` (unchanged if equal)."""
    if tuple(grid) == tuple(target):
        return patches
    b, n, c = patches.shape
    feature_map = patches.transpose(1, 2).reshape(b, c, *grid)
    out = F.interpolate(feature_map, size=target, mode="bilinear", align_corners=False)
    return out.flatten(2).transpose(1, 2)
