"""The fixed-target baseline: the teacher's last block (or its last n blocks) all run long."""

from __future__ import annotations

from leapkd.errors import LeapkdError
from leapkd.methods.base import FeatureDistillation
from leapkd.models import Backbone


class FixedTarget(FeatureDistillation):
    """Distil against the normed patch tokens of the teacher's last `last_n` blocks.

    With n > 1 the target is their concatenation along the channel axis and the projector
    maps D_s -> n * D_t. The teacher always runs to its last block.
    """

    name = "fixed"

    def __init__(self, teacher: Backbone, student: Backbone, last_n: int = 1, **kwargs: object) -> None:
        if not 1 <= last_n <= teacher.num_blocks:
            raise LeapkdError(
                f"fixed_last_n is {last_n}, but the teacher {teacher.name} has {teacher.num_blocks} blocks",
                f"set --fixed_last_n between 1 and {teacher.num_blocks}",
            )
        super().__init__(teacher, student, target_width=last_n * teacher.embed_dim, **kwargs)  # type: ignore[arg-type]
        self.last_n = last_n

    def target_blocks(self) -> list[int]:
        L = self.num_teacher_blocks
        return list(range(L - self.last_n + 1, L + 1))
