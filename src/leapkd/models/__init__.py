"""Backbones: one adapter (`Backbone`) over every ViT source leapkd loads."""

from leapkd.models.adapter import IMAGENET_MEAN, IMAGENET_STD, Backbone, flatten_blocks, freeze
from leapkd.models.registry import (
    EMBEDDED_TEACHER,
    PRESETS,
    check_teacher_has_weights,
    check_token_grids,
    describe_models,
    load_backbone,
    load_student_file,
    save_student_file,
)

__all__ = [
    "EMBEDDED_TEACHER",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRESETS",
    "Backbone",
    "check_teacher_has_weights",
    "check_token_grids",
    "describe_models",
    "flatten_blocks",
    "freeze",
    "load_backbone",
    "load_student_file",
    "save_student_file",
]
