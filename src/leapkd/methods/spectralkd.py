"""SpectralKD: align the 2-D spectra of chosen student and teacher blocks (docs/method.md, section 2)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from leapkd.config import MethodArgs
from leapkd.methods.feature import FeatureArgs, FeatureDistillation
from leapkd.methods.registry import register_method
from leapkd.models import Backbone


class SpectralArgs(FeatureArgs):
    spectral_weight: float = Field(
        0.2, ge=0, description="weight of the spectral (FFT) loss (paper: 0.2 for DeiT students)"
    )


@register_method("spectralkd")
class SpectralKD(FeatureDistillation):
    """Spectral loss on layer pairs (+ optional CE and logit KD); the teacher runs to its last block.

    No feature MSE (hence no progress metric, and no projector unless the CLS term needs one).
    """

    Args: ClassVar[type[MethodArgs]] = SpectralArgs
    feature_weight: ClassVar[float] = 0.0

    def __init__(
        self, args: SpectralArgs, teacher: Backbone, student: Backbone, *, num_classes: int | None, seed: int
    ) -> None:
        widths = [teacher.width]
        super().__init__(args, teacher, student, num_classes=num_classes, seed=seed, target_widths=widths)

    def target_blocks(self) -> list[int]:
        return [len(self.teacher_levels)]
