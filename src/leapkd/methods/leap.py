"""LEAP: the target walks through the teacher's blocks as the student catches up."""

from __future__ import annotations

import torch

from leapkd.curriculum import Curriculum, CurriculumConfig
from leapkd.methods.base import FeatureDistillation, StudentOutput
from leapkd.models import Backbone


class Leap(FeatureDistillation):
    """Feature distillation against the teacher's current curriculum block.

    The teacher runs blocks 1..b only. The curriculum (`leapkd.curriculum.Curriculum`)
    decides b from the progress metric; its state travels in this module's state_dict.
    """

    name = "leap"

    def __init__(
        self,
        teacher: Backbone,
        student: Backbone,
        curriculum: CurriculumConfig,
        calibrate: bool = True,
        reset_projector_on_level_up: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(teacher, student, target_width=teacher.embed_dim, **kwargs)  # type: ignore[arg-type]
        if curriculum.num_blocks != teacher.num_blocks:
            raise ValueError("the curriculum must have as many blocks as the teacher")
        self.curriculum = Curriculum(curriculum)
        self.calibrate = calibrate
        self.reset_on_level_up = reset_projector_on_level_up

    def target_blocks(self) -> list[int]:
        return [self.curriculum.block]

    @torch.no_grad()
    def start(self, teacher: Backbone, student: StudentOutput, images: torch.Tensor) -> None:
        """Calibration: score the random student against every teacher block in one pass."""
        if not self.calibrate:
            return
        L = teacher.num_blocks
        outs = teacher.forward_blocks(images, range(1, L + 1))
        assert self.projector is not None, "leap always trains the projector"
        projected = self.projector(student.tokens[:, student.prefix :])
        p = teacher.num_prefix_tokens
        scores = [float(self.reduce(self.metric_fn(projected, outs[b][:, p:]))) for b in range(1, L + 1)]
        self.calibration_scores = scores
        self.curriculum.calibrate(scores)

    def after_step(self, metric: float) -> bool:
        return self._moved(self.curriculum.observe(metric))

    def after_epoch(self) -> bool:
        return self._moved(self.curriculum.end_epoch())

    def _moved(self, moved: bool) -> bool:
        if moved and self.reset_on_level_up:
            self.reset_projector()
        return moved

    def get_extra_state(self) -> dict:
        return {**super().get_extra_state(), "curriculum": self.curriculum.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        super().set_extra_state(state)
        self.curriculum.load_state_dict(state["curriculum"])
