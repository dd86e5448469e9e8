"""The training engine: the LightningModule (one step), its callbacks, and the trainer."""

from leapkd.engine.module import DistillModule, Lane, StepRecord, untrained_parameters
from leapkd.engine.trainer import RunCallbacks, StudentCallbacks, StudentSetup, build_trainer, run_callbacks

__all__ = [
    "DistillModule",
    "Lane",
    "RunCallbacks",
    "StepRecord",
    "StudentCallbacks",
    "StudentSetup",
    "build_trainer",
    "run_callbacks",
    "untrained_parameters",
]
