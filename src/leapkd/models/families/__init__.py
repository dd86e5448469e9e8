"""One module per family quirk; `wrap` picks the family of a built model."""

from __future__ import annotations

from typing import Any

from timm.models.cait import Cait
from timm.models.eva import Eva
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from leapkd.errors import LeapkdError
from leapkd.models.contract import Backbone
from leapkd.models.families.cait import CaitBackbone
from leapkd.models.families.cnn import CnnBackbone
from leapkd.models.families.custom import LevelledModel, ModuleBackbone
from leapkd.models.families.swin import SwinBackbone
from leapkd.models.families.vit import TokenBackbone

__all__ = ["CaitBackbone", "CnnBackbone", "LevelledModel", "ModuleBackbone", "SwinBackbone", "TokenBackbone", "wrap"]


def wrap(model: nn.Module, name: str, image_size: int, **kwargs: Any) -> Backbone:
    """The backbone of `model` under the contract, by its family."""
    if isinstance(model, Cait):
        return CaitBackbone(model, name, image_size, **kwargs)
    if isinstance(model, SwinTransformer):
        return SwinBackbone(model, name, image_size, **kwargs)
    if isinstance(model, VisionTransformer | Eva):
        return TokenBackbone(model, name, image_size, **kwargs)
    if isinstance(model, LevelledModel):
        return ModuleBackbone(model, name, image_size, **kwargs)
    if hasattr(model, "feature_info") and hasattr(model, "forward_intermediates"):
        return CnnBackbone(model, name, image_size, **kwargs)
    raise LeapkdError(
        f"{name} is a {type(model).__name__}, which leapkd cannot read levels from",
        "use a timm model with forward_intermediates (ViT, DeiT, DINOv2, Eva, CaiT, Swin, CNNs) "
        "or implement leapkd.models.LevelledModel (README, 'Models')",
    )
