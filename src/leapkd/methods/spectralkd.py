"""SpectralKD: align the 2-D spectra of chosen student and teacher blocks (SPEC section 2)."""

from __future__ import annotations

from leapkd.methods.base import FeatureDistillation
from leapkd.models import Backbone


def default_spectral_pairs(student_blocks: int, teacher_blocks: int) -> list[tuple[int, int]]:
    """The paper's pattern, "the first two and the last six", scaled to the two depths.

    Student blocks 1, 2 pair with teacher blocks 1, 2; the student's last k blocks pair
    with the teacher's last k, k = min(6, student_blocks - 2, teacher_blocks - 2). For the
    paper's 12-block student and 24-block teacher this gives its (1, 2, 7..12) x (1, 2, 19..24)
    (1-based), i.e. the (0, 1, 6..11) x (0, 1, 18..23) of the paper.
    """
    k = max(0, min(6, student_blocks - 2, teacher_blocks - 2))
    first = [(b, b) for b in range(1, min(2, student_blocks, teacher_blocks) + 1)]
    last = [(student_blocks - k + i, teacher_blocks - k + i) for i in range(1, k + 1)]
    return first + last


class SpectralKD(FeatureDistillation):
    """Spectral loss on layer pairs (+ optional CE and logit KD); the teacher runs to its last block.

    No feature MSE by default (`feature_weight=0`), hence no progress metric either.
    """

    name = "spectralkd"

    def __init__(self, teacher: Backbone, student: Backbone, **kwargs: object) -> None:
        kwargs.setdefault("feature_weight", 0.0)
        super().__init__(teacher, student, target_width=teacher.embed_dim, **kwargs)  # type: ignore[arg-type]

    def target_blocks(self) -> list[int]:
        return [self.num_teacher_blocks]
