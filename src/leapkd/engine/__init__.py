"""The training engine: the LightningModule (one step), its callbacks, and the trainer."""

from leapkd.engine.module import DistillModule, StepRecord, untrained_parameters
from leapkd.engine.trainer import RunCallbacks, build_trainer, run_callbacks

__all__ = ["DistillModule", "RunCallbacks", "StepRecord", "build_trainer", "run_callbacks", "untrained_parameters"]
