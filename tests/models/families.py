"""Tiny random-init models of every family leapkd supports (built in well under a second each)."""

import torch
from torch import nn

import leapkd

# id -> (source, image size, build arguments)
FAMILIES = {
    "vit": ("vit-nano", 56, {"patch_size": 14}),
    "deit-distilled": ("deit_tiny_distilled_patch16_224", 32, {"model_kwargs": {"depth": 3}}),
    "dinov2": ("vit_small_patch14_dinov2", 28, {"model_kwargs": {"depth": 3}}),
    "dinov2-registers": ("vit_small_patch14_reg4_dinov2", 28, {"model_kwargs": {"depth": 3}}),
    "dinov3-eva": ("vit_small_patch16_dinov3", 32, {"model_kwargs": {"depth": 3}}),
    "eva02": ("eva02_tiny_patch14_224", 28, {"model_kwargs": {"depth": 3}}),
    "cait": ("cait_xxs24_224", 32, {"model_kwargs": {"depth": 4}}),
    "swin": (
        "swin_tiny_patch4_window7_224",
        64,
        {"model_kwargs": {"embed_dim": 24, "depths": [1, 1, 2, 1], "num_heads": [1, 2, 2, 4]}},
    ),
    "resnet": ("resnet18", 32, {}),
    "convnext": ("convnext_atto", 32, {}),
    "mobilenetv3": ("mobilenetv3_small_100", 32, {}),
    "mobilenetv4": ("mobilenetv4_conv_small", 32, {}),
    "efficientnet": ("efficientnet_b0", 32, {}),
    "regnet": ("regnetx_002", 32, {}),
    "custom": ("tiny-levels", 32, {}),
}


@leapkd.register_model("tiny-levels")
class TinyLevels(nn.Module):
    """A model of a user's: three conv stages, each halving the grid (the README's example)."""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        widths = (3, 16, 32, 64)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, stride=2, padding=1), nn.GELU()) for a, b in zip(widths, widths[1:])
        )
        self.num_levels = len(self.stages)

    def level_modules(self) -> list[nn.Module]:
        return list(self.stages)

    def forward_levels(self, images: torch.Tensor, levels: list[int]) -> dict[int, torch.Tensor]:
        out, x = {}, images
        for level, stage in enumerate(self.stages[: max(levels)], start=1):
            x = stage(x)
            if level in levels:
                out[level] = x
        return out
