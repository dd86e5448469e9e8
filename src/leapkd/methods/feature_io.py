"""What the feature methods read of the teacher and the student for one batch."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from leapkd.methods.base import TeacherPass
from leapkd.models import Backbone, Features


@dataclass
class StudentOutput:
    """The student's features for one batch."""

    features: Features  # the last level, normalised
    embed: Features | None = None  # raw patch projection, when the method asks for it
    taps: dict[int, Features] = field(default_factory=dict)  # un-normalised features of the tapped levels


@dataclass
class FeatureTargets(TeacherPass):
    """What the teacher produced for one batch of a feature method."""

    patch: Tensor = field(kw_only=True)  # (B, N_t, D_target)
    grid: tuple[int, int] = field(kw_only=True)  # the target's grid (N_t = rows x columns)
    cls: Tensor | None = None  # (B, D_target) when the CLS loss is on
    embed: Features | None = None  # teacher raw patch projection when that loss is on
    spectral: dict[int, Features] = field(default_factory=dict)  # un-normalised features per teacher level
    logits: Tensor | None = None  # teacher logits (B, classes) when logit KD is on
    layers: dict[int, Features] = field(default_factory=dict)  # normalised features per level (layer by layer)


def student_output(student: Backbone, images: Tensor, taps: list[int], projection: bool) -> StudentOutput:
    """The student's last level (normalised) and the un-normalised `taps`, in one pass, plus
    its patch projection when `projection`."""
    last = student.num_levels
    raw = student.forward_levels(images, [*taps, last], norm=False)
    embed = student.patch_projection(images) if projection else None
    return StudentOutput(student.normalize(last, raw[last]), embed, {b: raw[b] for b in taps})
