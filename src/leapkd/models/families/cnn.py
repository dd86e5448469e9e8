"""CNNs (ResNet, ConvNeXt, MobileNetV3/V4, EfficientNet, RegNet, and any timm model with
`feature_info` and `forward_intermediates`): the levels are the feature stages timm lists
(stem included where timm lists it). Stages, not blocks: they are where width and stride
change, they are few (4-5, like the stages of a hierarchical transformer) and timm exits
early at them. CNNs have no final token norm: each level is normalised per position over
channels without learned parameters; they have no prefix tokens, so the pooled embedding
is the mean over positions. The model's own classifier is exposed where timm's head takes
the last stage itself (ResNet, ConvNeXt, MobileNetV3/V4, RegNet); EfficientNet and GhostNet
run a final convolution after it, which the levels do not hold."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, cast

import torch
from torch import Tensor, nn

from leapkd.models.contract import Backbone, Features, Level


class FeatureStages(Protocol):
    """What a timm model with feature stages offers (any nn.Module that has these works)."""

    feature_info: Sequence[dict[str, Any]]

    def forward_intermediates(self, x: Tensor, **kwargs: Any) -> Any: ...


class CnnBackbone(Backbone):
    family = "cnn"

    def __init__(self, model: nn.Module, name: str, image_size: int, **kwargs: Any) -> None:
        info = list(cast(FeatureStages, model).feature_info)
        self._modules_of_levels = [str(entry["module"]) for entry in info]
        shapes, head_takes_last = _probe(model, image_size, len(info))
        levels = [Level(c, (h, w), int(entry["reduction"]), 0) for (c, h, w), entry in zip(shapes, info)]
        super().__init__(model, name, levels, image_size, **kwargs)
        self.exposes_classifier = head_takes_last

    def level_modules(self) -> list[nn.Module]:
        return [self.model.get_submodule(name) for name in self._modules_of_levels]

    def _run(self, images: Tensor, levels: list[int]) -> dict[int, Features]:
        outs = cast(FeatureStages, self.model).forward_intermediates(
            images, indices=[b - 1 for b in levels], stop_early=True, output_fmt="NCHW", intermediates_only=True
        )
        return {b: Features.from_map(x) for b, x in zip(levels, outs)}

    def head_input(self, last: Features) -> Tensor:
        return last.as_map()


@torch.no_grad()
def _probe(model: nn.Module, image_size: int, count: int) -> tuple[list[tuple[int, int, int]], bool]:
    """(channels, rows, columns) of every feature stage, and whether timm's final features (what
    its head takes) are the last stage itself, from one eval-mode pass on fixed random images."""
    was_training = model.training
    model.eval()
    images = torch.randn(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    final, outs = cast(FeatureStages, model).forward_intermediates(images, indices=list(range(count)))
    model.train(was_training)
    shapes = [(int(o.shape[1]), int(o.shape[2]), int(o.shape[3])) for o in outs]
    return shapes, final.shape == outs[-1].shape and torch.equal(final, outs[-1])
