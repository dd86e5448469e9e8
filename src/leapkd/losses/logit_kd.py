"""Logit distillation: `T² · KL(teacher/T || student/T)` (SPEC section 5.2, the soft variant)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class LogitKD(nn.Module):
    """Temperature-scaled KL divergence from the teacher's to the student's class distribution."""

    name = "kd"

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"the KD temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        t = self.temperature
        kl = F.kl_div(
            F.log_softmax(student_logits.float() / t, dim=-1),
            F.log_softmax(teacher_logits.float() / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
        return kl * (t * t)
