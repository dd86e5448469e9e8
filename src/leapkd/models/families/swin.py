"""Swin: the levels are the blocks of every stage, in order (a stage's patch merging is run
with its first block). The final norm is sized for the last stage and normalises its
levels; earlier stages are normalised over channels without learned parameters."""

from __future__ import annotations

from typing import Any, cast

import torch
from timm.layers import PatchEmbed
from timm.models.swin_transformer import SwinTransformer, SwinTransformerStage
from torch import Tensor, nn

from leapkd.models.contract import Backbone, Features, Level, channel_layer_norm


class SwinBackbone(Backbone):
    family = "swin"
    exposes_classifier = True
    model: SwinTransformer

    def __init__(self, model: SwinTransformer, name: str, image_size: int, **kwargs: Any) -> None:
        levels = []
        for stage in _stages(model):
            h, w = (int(v) for v in stage.output_resolution)
            blocks = _blocks(stage)
            width = int(cast(nn.LayerNorm, blocks[0].norm1).normalized_shape[0])
            levels += [Level(width, (h, w), image_size // h, 0)] * len(blocks)
        self.last_stage_from = len(levels) - len(_blocks(_stages(model)[-1])) + 1
        super().__init__(model, name, levels, image_size, **kwargs)

    @property
    def patch_size(self) -> int:
        return int(cast(PatchEmbed, self.model.patch_embed).patch_size[0])

    def level_modules(self) -> list[nn.Module]:
        return [block for stage in _stages(self.model) for block in _blocks(stage)]

    def _run(self, images: Tensor, levels: list[int]) -> dict[int, Features]:
        x = self.model.patch_embed(images)  # (B, H, W, C)
        found, level, deepest = {}, 0, max(levels)
        for stage in _stages(self.model):
            x = cast(nn.Module, stage.downsample)(x)
            for block in _blocks(stage):
                x = block(x)
                level += 1
                if level in levels:
                    found[level] = Features(torch.flatten(x, 1, 2), (int(x.shape[1]), int(x.shape[2])))
                if level == deepest:
                    return found
        return found

    def normalize(self, level: int, features: Features) -> Features:
        if level >= self.last_stage_from:
            return features.map_each(cast(nn.Module, self.model.norm))
        return features.map_each(channel_layer_norm)

    def head_input(self, last: Features) -> Tensor:
        """The normed last stage as timm's head takes it: (B, H, W, C)."""
        patches = self.normalize(self.num_levels, last).patches
        return patches.reshape(patches.shape[0], *last.grid, patches.shape[-1])

    def patch_projection(self, images: Tensor) -> Features:
        return Features.from_map(cast(nn.Module, self.model.patch_embed.proj)(self.as_input(images)))


def _stages(model: SwinTransformer) -> list[SwinTransformerStage]:
    return [cast(SwinTransformerStage, stage) for stage in model.layers]


def _blocks(stage: SwinTransformerStage) -> list[nn.Module]:
    return list(stage.blocks)
