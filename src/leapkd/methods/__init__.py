"""Distillation methods: each says which teacher blocks it needs, the targets and the loss."""

from __future__ import annotations

from leapkd.config import DistillConfig
from leapkd.curriculum import CurriculumConfig
from leapkd.methods.base import FeatureDistillation, LossOutput, StudentOutput, Targets
from leapkd.methods.fixed import FixedTarget
from leapkd.methods.leap import Leap
from leapkd.methods.spectralkd import SpectralKD, default_spectral_pairs
from leapkd.models import Backbone

__all__ = [
    "FeatureDistillation",
    "FixedTarget",
    "Leap",
    "SpectralKD",
    "default_spectral_pairs",
    "LossOutput",
    "StudentOutput",
    "Targets",
    "build_method",
]


def build_method(
    cfg: DistillConfig, teacher: Backbone, student: Backbone, num_classes: int | None = None
) -> FeatureDistillation:
    """The method named by `cfg.method`, wired to the teacher's and student's sizes."""
    if cfg.student_layers is not None and cfg.teacher_layers is not None:
        pairs = list(zip(cfg.student_layers, cfg.teacher_layers))
    else:
        pairs = default_spectral_pairs(student.num_blocks, teacher.num_blocks)
    common = dict(
        cls_weight=cfg.cls_weight,
        patch_embed_weight=cfg.patch_embed_weight,
        metric=cfg.metric,
        metric_images=cfg.metric_images,
        seed=cfg.seed,
        spectral_weight=cfg.resolved_spectral_weight,
        spectral_pairs=pairs,
        num_classes=num_classes,
        ce_weight=cfg.ce_weight,
        kd_weight=cfg.kd_weight,
        kd_temperature=cfg.kd_temperature,
    )
    if cfg.method == "fixed":
        return FixedTarget(teacher, student, last_n=cfg.fixed_last_n, **common)
    if cfg.method == "spectralkd":
        return SpectralKD(teacher, student, **common)
    curriculum = CurriculumConfig(
        num_blocks=teacher.num_blocks,
        threshold=cfg.threshold,
        alpha=cfg.alpha,
        max_epochs_per_block=cfg.max_epochs_per_block,
        snap_to_last=cfg.snap_to_last,
    )
    return Leap(
        teacher,
        student,
        curriculum,
        calibrate=cfg.calibrate,
        reset_projector_on_level_up=cfg.reset_projector,
        **common,
    )
