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
        if not 1 <= last_n <= teacher.num_blocks:
            raise LeapkdError(
                f"fixed_last_n is {last_n}, but the teacher {teacher.name} has {teacher.num_blocks} blocks",
                f"set --fixed_last_n between 1 and {teacher.num_blocks}",
            )
        width = last_n * teacher.embed_dim
        super().__init__(args, teacher, student, num_classes=num_classes, seed=seed, target_width=width)
        self.last_n = last_n

    def target_blocks(self) -> list[int]:
        L = self.num_teacher_blocks
        return list(range(L - self.last_n + 1, L + 1))
