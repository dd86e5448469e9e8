"""Distillation methods as registered plug-ins; importing this package registers the built-ins."""

from leapkd.methods.base import LossOutput, LrRestart, Method, TeacherPass
from leapkd.methods.feature import FeatureArgs, FeatureDistillation, default_spectral_pairs
from leapkd.methods.feature_io import FeatureTargets, StudentOutput
from leapkd.methods.fixed import FixedArgs, FixedTarget
from leapkd.methods.leap import Leap, LeapArgs
from leapkd.methods.registry import METHODS, build_method, config_class, load_config, register_method
from leapkd.methods.spectralkd import SpectralArgs, SpectralKD

__all__ = [
    "METHODS",
    "FeatureArgs",
    "FeatureDistillation",
    "FeatureTargets",
    "FixedArgs",
    "FixedTarget",
    "Leap",
    "LeapArgs",
    "LossOutput",
    "LrRestart",
    "Method",
    "SpectralArgs",
    "SpectralKD",
    "StudentOutput",
    "TeacherPass",
    "build_method",
    "config_class",
    "default_spectral_pairs",
    "load_config",
    "register_method",
]
