"""Cross-entropy of the student's logits against the labels."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class CrossEntropy(nn.Module):
    """Softmax cross-entropy of (B, C) logits against (B,) integer labels, in float32."""

    name = "ce"

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), labels)
