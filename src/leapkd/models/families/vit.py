"""Token families: plain ViT, DeiT (distilled too), DINOv2 with or without registers, Eva
(DINOv3, EVA-02, with RoPE). Levels are the transformer blocks; every level carries the
prefix tokens (CLS, distillation token, registers) and is normalised by the final norm."""

from __future__ import annotations

from typing import Any, cast

from timm.models.eva import Eva
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from leapkd.models.contract import Backbone, Features, Level

TokenModel = VisionTransformer | Eva


class TokenBackbone(Backbone):
    family = "vit"
    exposes_classifier = True
    model: TokenModel

    def __init__(self, model: TokenModel, name: str, image_size: int, **kwargs: Any) -> None:
        gh, gw = model.patch_embed.grid_size
        patch = model.patch_embed.patch_size[0]
        level = Level(int(model.embed_dim), (int(gh), int(gw)), int(patch), int(model.num_prefix_tokens))
        super().__init__(model, name, [level] * len(model.blocks), image_size, **kwargs)

    @property
    def patch_size(self) -> int:
        return self.levels[0].stride

    def level_modules(self) -> list[nn.Module]:
        return list(self.model.blocks)

    def _run(self, images: Tensor, levels: list[int]) -> dict[int, Features]:
        prefix = self.levels[0].prefix
        outs = self.model.forward_intermediates(
            images,
            indices=[b - 1 for b in levels],
            return_prefix_tokens=prefix > 0,  # timm has no prefix list to return without prefix tokens
            norm=False,
            stop_early=True,
            output_fmt="NLC",
            intermediates_only=True,
        )
        grid = self.levels[0].grid
        if prefix == 0:
            return {b: Features(x, grid) for b, x in zip(levels, cast(list[Tensor], outs))}
        return {b: Features(x, grid, p) for b, (x, p) in zip(levels, cast(list[tuple[Tensor, Tensor]], outs))}

    def stem(self, images: Tensor) -> Features | None:
        """Patch + position embedding, as the first block receives them (plain ViTs only)."""
        model = self.model
        if not isinstance(model, VisionTransformer):
            return None
        x = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(self.as_input(images)))))
        k = self.levels[0].prefix
        return Features(x[:, k:], self.levels[0].grid, x[:, :k] if k else None)

    def normalize(self, level: int, features: Features) -> Features:
        return features.map_each(self.model.norm)

    def patch_projection(self, images: Tensor) -> Features:
        return Features.from_map(self.model.patch_embed.proj(self.as_input(images)))
