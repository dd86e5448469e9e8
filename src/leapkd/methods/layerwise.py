"""The layer-by-layer target (`fixed_all_layers`, the LEAP reference's `--all-layers` baseline):
student level i against teacher level i, every level, one projector per pair.

The student's levels are taken raw (no final norm), the teacher's through its own
normalisation; each pair's patch MSE (the student resampled to the teacher's grid first) and,
with the CLS term, the MSE of the same projector applied to the CLS token, are summed over
the levels, or averaged (`reduce` "mean"). As `train_distill.py:1908-2048` of the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leapkd.errors import LeapkdError
from leapkd.methods.align import ProjectorInit, ProjectorKind, projector
from leapkd.models import Backbone, Features

LayerReduce = Literal["sum", "mean"]


class LayerwiseLoss(nn.Module):
    """`loss(student_levels, teacher_levels, cls)` -> {"feature": ..., "cls": ...}: one projector
    per (student level i, teacher level i) pair, D_s(i) -> D_t(i)."""

    def __init__(
        self,
        student: Backbone,
        teacher: Backbone,
        reduce: LayerReduce = "sum",
        kind: ProjectorKind = "linear",
        init: ProjectorInit = "torch",
        cls: bool = False,
    ) -> None:
        super().__init__()
        if student.num_levels != teacher.num_levels:
            raise LeapkdError(
                f"fixed_all_layers pairs student level i with teacher level i, and the student {student.name} "
                f"has {student.num_levels} levels, the teacher {teacher.name} {teacher.num_levels}",
                "use a student and a teacher of the same depth (e.g. a 12-block student for DINOv2 ViT-S/14), "
                "or another fixed target",
            )
        if cls and not all(s.prefix and t.prefix for s, t in zip(student.levels, teacher.levels)):
            raise LeapkdError(
                "fixed_all_layers with cls_weight needs a CLS token at every level of both models",
                "set `cls_weight` 0, or use ViT-family models",
            )
        self.reduce = reduce
        self.projectors = nn.ModuleList(
            projector(s.width, t.width, kind, init) for s, t in zip(student.levels, teacher.levels)
        )

    def forward(self, student: dict[int, Features], teacher: dict[int, Features], cls: bool) -> dict[str, Tensor]:
        """The summed (or averaged) per-level MSEs; `student`: raw levels, `teacher`: normalised ones."""
        feature: list[Tensor] = []
        tokens: list[Tensor] = []
        for level, head in enumerate(self.projectors, start=1):
            target, own = teacher[level], student[level]
            projected = head(own.resampled(target.grid).patches)
            feature.append(F.mse_loss(projected.float(), target.patches.float()))
            if cls and own.cls is not None and target.cls is not None:
                tokens.append(F.mse_loss(head(own.cls).float(), target.cls.float()))
        parts = {"feature": self._combine(feature)}
        if tokens:
            parts["cls"] = self._combine(tokens)
        return parts

    def _combine(self, losses: Sequence[Tensor]) -> Tensor:
        stacked = torch.stack(list(losses))
        return stacked.mean() if self.reduce == "mean" else stacked.sum()
