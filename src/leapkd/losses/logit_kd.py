"""Logit distillation (docs/method.md, section 2): soft, `T² · KL(teacher/T || student/T)`, or DeiT's hard
variant, the cross-entropy of the student's logits against the teacher's top class."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

KdMode = Literal["soft", "hard"]


class LogitKD(nn.Module):
    """Soft: temperature-scaled KL divergence from the teacher's to the student's class
    distribution; hard: cross-entropy against the teacher's argmax (the temperature unused)."""

    name = "kd"

    def __init__(self, temperature: float = 1.0, mode: KdMode = "soft") -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"the KD temperature must be positive, got {temperature}")
        self.temperature, self.mode = temperature, mode

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        if self.mode == "hard":
            return F.cross_entropy(student_logits.float(), teacher_logits.argmax(dim=-1))
        t = self.temperature
        kl = F.kl_div(
            F.log_softmax(student_logits.float() / t, dim=-1),
            F.log_softmax(teacher_logits.float() / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
        return kl * (t * t)
