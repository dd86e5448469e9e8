"""CaiT: the trunk's self-attention blocks are the levels; its class-attention blocks, run
on the last trunk level only, give the CLS token. Levels before the last carry no prefix."""

from __future__ import annotations

from typing import Any, cast

from timm.layers import PatchEmbed
from timm.models.cait import Cait
from torch import Tensor, nn

from leapkd.models.contract import Backbone, Features, Level


class CaitBackbone(Backbone):
    family = "cait"
    exposes_classifier = True
    model: Cait

    def __init__(self, model: Cait, name: str, image_size: int, **kwargs: Any) -> None:
        embed = cast(PatchEmbed, model.patch_embed)
        gh, gw = embed.grid_size
        patch = int(embed.patch_size[0])
        width, depth = int(model.embed_dim), len(model.blocks)
        levels = [Level(width, (int(gh), int(gw)), patch, 1 if b == depth else 0) for b in range(1, depth + 1)]
        super().__init__(model, name, levels, image_size, **kwargs)

    @property
    def patch_size(self) -> int:
        return self.levels[0].stride

    def level_modules(self) -> list[nn.Module]:
        return list(self.model.blocks)

    def _run(self, images: Tensor, levels: list[int]) -> dict[int, Features]:
        outs = self.model.forward_intermediates(
            images,
            indices=[b - 1 for b in levels],
            norm=False,
            stop_early=True,
            output_fmt="NLC",
            intermediates_only=True,
        )
        grid = self.levels[0].grid
        found = {b: Features(x, grid) for b, x in zip(levels, cast(list[Tensor], outs))}
        last = self.num_levels
        if last in found:
            trunk = found[last].patches
            # a copy, not an expanded view: a view of a parameter carries requires_grad without a
            # grad_fn under no_grad, which FLOP counting's module tracker cannot take
            cls = self.model.cls_token.repeat(trunk.shape[0], 1, 1)
            for block in self.model.blocks_token_only:
                cls = block(trunk, cls)
            found[last] = Features(trunk, grid, cls)
        return found

    def normalize(self, level: int, features: Features) -> Features:
        return features.map_each(self.model.norm)

    def patch_projection(self, images: Tensor) -> Features:
        return Features.from_map(cast(PatchEmbed, self.model.patch_embed).proj(self.as_input(images)))
