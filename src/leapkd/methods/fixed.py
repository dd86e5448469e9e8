"""The fixed-target baselines: one target for the whole run.

- the teacher's last block (the default), or the concatenation of its last n blocks
  (`fixed_last_n`; with `cls_weight`, the CLS tokens of those blocks too);
- one chosen teacher level (`fixed_level`): the teacher runs only that deep;
- the average of every teacher level's normed tokens (`fixed_average`).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field, model_validator
from torch import Tensor

from leapkd.config import MethodArgs
from leapkd.errors import LeapkdError
from leapkd.methods.feature import FeatureArgs, FeatureDistillation
from leapkd.methods.registry import register_method
from leapkd.models import Backbone


class FixedArgs(FeatureArgs):
    fixed_last_n: int = Field(1, ge=1, description="target = concatenation of the teacher's last n blocks")
    fixed_level: int | None = Field(
        None, ge=1, description="target = this teacher level (1-based) instead of the last; the teacher runs that deep"
    )
    fixed_average: bool = Field(False, description="target = the mean of every teacher level's normed tokens")

    @model_validator(mode="after")
    def _one_target(self) -> FixedArgs:
        chosen = [self.fixed_last_n > 1, self.fixed_level is not None, self.fixed_average]
        if sum(chosen) > 1:
            raise ValueError("choose one fixed target: fixed_last_n > 1, fixed_level or fixed_average")
        return self


@register_method("fixed")
class FixedTarget(FeatureDistillation):
    """Distil against one fixed target: the normed patch tokens of the teacher's last
    `fixed_last_n` blocks (concatenated along channels: the projector maps D_s -> n * D_t),
    of level `fixed_level`, or the mean over all its levels (`fixed_average`)."""

    Args: ClassVar[type[MethodArgs]] = FixedArgs

    def __init__(
        self, args: FixedArgs, teacher: Backbone, student: Backbone, *, num_classes: int | None, seed: int
    ) -> None:
        L = teacher.num_levels
        self.average = args.fixed_average
        if args.fixed_level is not None:
            if args.fixed_level > L:
                raise LeapkdError(
                    f"fixed_level is {args.fixed_level}, but the teacher {teacher.name} has {L} levels",
                    f"set --fixed_level between 1 and {L}",
                )
            if args.kd_weight > 0 and args.fixed_level < L:
                raise LeapkdError(
                    "kd_weight needs the teacher's last level every step, and fixed_level stops the teacher earlier",
                    "drop --kd_weight, or use --fixed_level with the last level",
                )
            self.blocks = [args.fixed_level]
        elif self.average:
            self.blocks = list(range(1, L + 1))
        else:
            if args.fixed_last_n > L:
                raise LeapkdError(
                    f"fixed_last_n is {args.fixed_last_n}, but the teacher {teacher.name} has {L} levels",
                    f"set --fixed_last_n between 1 and {L}",
                )
            self.blocks = list(range(L - args.fixed_last_n + 1, L + 1))
        levels = [teacher.levels[b - 1] for b in self.blocks]
        if len({(lv.width, lv.grid) for lv in levels}) > 1:
            raise LeapkdError(
                f"teacher levels {self.blocks[0]}..{self.blocks[-1]} of {teacher.name} differ in width or grid "
                f"({', '.join(f'{lv.width} on {lv.grid[0]}x{lv.grid[1]}' for lv in levels)}), so they cannot be "
                f"{'averaged' if self.average else 'concatenated'}",
                "use --fixed_last_n 1 or --fixed_level, or levels that share a stage",
            )
        width = levels[0].width if self.average else sum(lv.width for lv in levels)
        super().__init__(args, teacher, student, num_classes=num_classes, seed=seed, target_widths=[width])

    def target_blocks(self) -> list[int]:
        return self.blocks

    def target_width(self) -> int:
        return self.teacher_levels[self.blocks[0] - 1].width if self.average else super().target_width()

    def combine(self, tokens: list[Tensor]) -> Tensor:
        return torch.stack(tokens).mean(0) if self.average else super().combine(tokens)
