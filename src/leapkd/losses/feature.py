"""Feature MSE: projected student patch tokens against the target tokens (docs/method.md, section 1.2)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class FeatureMSE(nn.Module):
    """MSE between (B, P, D) projected student tokens and (B, P, D) targets, in float32."""

    name = "feature"

    def forward(self, projected: Tensor, target: Tensor) -> Tensor:
        if projected.shape != target.shape:
            raise ValueError(f"student tokens {tuple(projected.shape)} vs target {tuple(target.shape)}")
        return F.mse_loss(projected.float(), target.float())
