"""Any `nn.Module` of yours, through a small Protocol (see README, "Models").

The module returns feature maps of the levels it is asked for, running only as deep as
the deepest one. Levels (width, grid) are read from one pass at the image size; the
normalisation and pooling rules are those of maps (channel LayerNorm without parameters,
mean over positions).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, cast, runtime_checkable

import torch
from torch import Tensor, nn

from leapkd.models.contract import Backbone, Features, Level


@runtime_checkable
class LevelledModel(Protocol):
    """What leapkd needs from a model of yours."""

    num_levels: int

    def forward_levels(self, images: Tensor, levels: Sequence[int]) -> dict[int, Tensor]:
        """{level: (B, C, H, W) map} for 1-based `levels`, stopping after the deepest."""
        ...


class ModuleBackbone(Backbone):
    family = "custom"

    def __init__(self, model: nn.Module, name: str, image_size: int, **kwargs: Any) -> None:
        if not isinstance(model, LevelledModel):
            raise TypeError(f"{type(model).__name__} does not implement LevelledModel (num_levels, forward_levels)")
        count = int(model.num_levels)
        with torch.no_grad():
            was_training = model.training
            model.eval()
            maps = model.forward_levels(torch.zeros(1, 3, image_size, image_size), list(range(1, count + 1)))
            model.train(was_training)
        levels = [
            Level(int(m.shape[1]), (int(m.shape[2]), int(m.shape[3])), image_size // int(m.shape[2]), 0)
            for _, m in sorted(maps.items())
        ]
        super().__init__(model, name, levels, image_size, **kwargs)

    def level_modules(self) -> list[nn.Module]:
        modules = getattr(self.model, "level_modules", None)
        if modules is None:
            raise NotImplementedError(f"{self.name} does not list its level modules")
        return list(modules())

    def _run(self, images: Tensor, levels: list[int]) -> dict[int, Features]:
        maps = cast(LevelledModel, self.model).forward_levels(images, levels)
        return {b: Features.from_map(maps[b]) for b in levels}
