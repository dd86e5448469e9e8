"""Backbones: one feature contract (`Backbone`: levels, early exit, pooled embedding) over
every family leapkd loads; a small module per family quirk under `families/`."""

from leapkd.models.contract import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    Features,
    Level,
    Pooling,
    freeze,
    resample_patches,
)
from leapkd.models.families import LevelledModel, wrap
from leapkd.models.files import (
    head_file_of,
    load_head_file,
    load_student_file,
    read_student_metadata,
    save_head_file,
    save_student_file,
)
from leapkd.models.registry import (
    EMBEDDED_TEACHER,
    MODELS,
    PRESETS,
    check_image_size,
    check_teacher_has_weights,
    describe_models,
    is_timm_name,
    load_backbone,
    register_model,
)

__all__ = [
    "EMBEDDED_TEACHER",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODELS",
    "PRESETS",
    "Backbone",
    "Features",
    "Level",
    "LevelledModel",
    "Pooling",
    "check_image_size",
    "check_teacher_has_weights",
    "describe_models",
    "is_timm_name",
    "freeze",
    "load_backbone",
    "head_file_of",
    "load_head_file",
    "load_student_file",
    "read_student_metadata",
    "register_model",
    "resample_patches",
    "save_head_file",
    "save_student_file",
    "wrap",
]
