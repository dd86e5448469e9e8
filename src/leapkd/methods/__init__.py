"""Distillation methods: each says which teacher blocks it needs, the targets and the loss."""

from __future__ import annotations

from leapkd.config import DistillConfig
from leapkd.curriculum import CurriculumConfig
from leapkd.methods.base import FeatureDistillation, LossOutput, StudentOutput, Targets
from leapkd.methods.fixed import FixedTarget
from leapkd.methods.leap import Leap
from leapkd.models import Backbone

__all__ = ["FeatureDistillation", "FixedTarget", "Leap", "LossOutput", "StudentOutput", "Targets", "build_method"]


def build_method(cfg: DistillConfig, teacher: Backbone, student: Backbone) -> FeatureDistillation:
    """The method named by `cfg.method`, wired to the teacher's and student's sizes."""
    common = dict(
        cls_weight=cfg.cls_weight,
        patch_embed_weight=cfg.patch_embed_weight,
        metric=cfg.metric,
        metric_images=cfg.metric_images,
        seed=cfg.seed,
    )
    if cfg.method == "fixed":
        return FixedTarget(teacher, student, last_n=cfg.fixed_last_n, **common)
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
