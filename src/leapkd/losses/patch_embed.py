"""Patch-embedding loss, as the LEAP reference's `--embed-loss` (docs/method.md, section 1.2).

`E_s`, `E_t` are the raw patch-projection conv outputs of student and teacher (before the
position embedding, no prefix tokens), flattened to (B, P, D). The loss is
`MSE(LN_s(P_e(E_s)), LN_t(E_t))`: `P_e` is a Linear D_s -> D_t of its own (not the main
projector) and `LN_s`, `LN_t` are LayerNorms over D_t with learnable affine; all three
are trained (they live in this module, hence in the optimizer and the checkpoint).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class PatchEmbedLoss(nn.Module):
    name = "patch_embed"

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.projector = nn.Linear(student_dim, teacher_dim)
        self.norm_student = nn.LayerNorm(teacher_dim)
        self.norm_teacher = nn.LayerNorm(teacher_dim)

    def forward(self, student_embed: Tensor, teacher_embed: Tensor) -> Tensor:
        s = self.norm_student(self.projector(student_embed))
        t = self.norm_teacher(teacher_embed)
        return F.mse_loss(s.float(), t.float())
