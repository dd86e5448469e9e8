"""CLS-token MSE: the projected student CLS token against the teacher's normed CLS token."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ClsMSE(nn.Module):
    """MSE between (B, D) projected student CLS tokens and (B, D) teacher CLS tokens, in float32."""

    name = "cls"

    def forward(self, projected_cls: Tensor, target_cls: Tensor) -> Tensor:
        return F.mse_loss(projected_cls.float(), target_cls.float())
