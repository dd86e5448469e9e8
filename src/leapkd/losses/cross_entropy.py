"""Cross-entropy of the student's logits against the labels (with optional label smoothing)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class CrossEntropy(nn.Module):
    """Softmax cross-entropy of (B, C) logits against (B,) integer labels, in float32;
    `label_smoothing` spreads that much of the target mass over all classes."""

    name = "ce"

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
