"""What happens around a training step, one callback each; `build_trainer` installs them."""

from leapkd.engine.callbacks.checkpoints import AtomicCheckpointIO, CheckpointPolicy
from leapkd.engine.callbacks.ema import StudentEma
from leapkd.engine.callbacks.evaluation import EvaluateDuringTraining, Scorer
from leapkd.engine.callbacks.flops import FlopAccounting
from leapkd.engine.callbacks.lockstep import DEBUG_RANKS_ENV, LockStepCheck
from leapkd.engine.callbacks.metrics_log import MetricsLog
from leapkd.engine.callbacks.progress import CurriculumProgressBar
from leapkd.engine.callbacks.signals import StopOnSignal
from leapkd.engine.callbacks.snapshots import Snapshots
from leapkd.engine.callbacks.teacher_head import TeacherHead, TeacherHeadFitter

__all__ = [
    "DEBUG_RANKS_ENV",
    "AtomicCheckpointIO",
    "CheckpointPolicy",
    "CurriculumProgressBar",
    "EvaluateDuringTraining",
    "FlopAccounting",
    "LockStepCheck",
    "MetricsLog",
    "Scorer",
    "Snapshots",
    "StopOnSignal",
    "StudentEma",
    "TeacherHead",
    "TeacherHeadFitter",
]
