"""The fixed-target baseline: the teacher's last block (or its last n blocks) all run long."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from leapkd.config import MethodArgs
from leapkd.errors import LeapkdError
from leapkd.methods.feature import FeatureArgs, FeatureDistillation
from leapkd.methods.registry import register_method
from leapkd.models import Backbone


class FixedArgs(FeatureArgs):
    fixed_last_n: int = Field(1, ge=1, description="target = concatenation of the teacher's last n blocks")


@register_method("fixed")
class FixedTarget(FeatureDistillation):
    """Distil against the normed patch tokens of the teacher's last `fixed_last_n` blocks.

    With n > 1 the target is their concatenation along the channel axis and the projector
    maps D_s -> n * D_t. The teacher always runs to its last block.
    """

    Args: ClassVar[type[MethodArgs]] = FixedArgs

    def __init__(
        self, args: FixedArgs, teacher: Backbone, student: Backbone, *, num_classes: int | None, seed: int
    ) -> None:
        last_n = args.fixed_last_n
        if not 1 <= last_n <= teacher.num_levels:
            raise LeapkdError(
                f"fixed_last_n is {last_n}, but the teacher {teacher.name} has {teacher.num_levels} levels",
                f"set --fixed_last_n between 1 and {teacher.num_levels}",
            )
        last = teacher.levels[-last_n:]
        if len({(lv.width, lv.grid) for lv in last}) > 1:
            raise LeapkdError(
                f"the last {last_n} levels of {teacher.name} differ in width or grid "
                f"({', '.join(f'{lv.width} on {lv.grid[0]}x{lv.grid[1]}' for lv in last)}), "
                "so they cannot be concatenated",
                "use --fixed_last_n 1, or a number of last levels that share a stage",
            )
        width = sum(lv.width for lv in last)
        super().__init__(args, teacher, student, num_classes=num_classes, seed=seed, target_widths=[width])
        self.last_n = last_n

    def target_blocks(self) -> list[int]:
        L = len(self.teacher_levels)
        return list(range(L - self.last_n + 1, L + 1))
