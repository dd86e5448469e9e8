"""An exponential moving average of the student's weights and of its classification head, when
the method trains one (`ema_decay`), updated after every optimizer step, as timm's ModelEma
averages a whole classifier. `kept_weights` says which weights are the run's student: the
average (the default) or the live weights, the average then only saved beside them."""

from __future__ import annotations

from typing import Any

import lightning as L
from timm.utils import ModelEmaV3
from torch import nn

from leapkd.engine.callbacks.per_student import StudentCallback
from leapkd.engine.lane import Lane
from leapkd.models import Backbone


class StudentEma(StudentCallback):
    def __init__(self, decay: float, lane: int = 0) -> None:
        self.lane_index = lane
        self.decay = decay
        self.live: nn.ModuleDict | None = None  # the trained student and head, as one module
        self.ema: ModelEmaV3 | None = None
        self._restored: dict[str, Any] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        lane = self.lane(pl_module)
        head = lane.method.student_classifier
        self.live = nn.ModuleDict({"student": lane.student, **({"head": head} if head is not None else {})})
        self.ema = ModelEmaV3(self.live, decay=self.decay)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert self.ema is not None
        self.ema.to(pl_module.device)
        if self._restored is not None:
            self.ema.load_state_dict(self._with_head(self._restored))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        assert self.ema is not None
        if self.lane(pl_module).record is not None:  # after an optimizer step, not a micro-batch
            self.ema.update(self.live)

    @property
    def student(self) -> Backbone:
        assert self.ema is not None
        module = self.ema.module["student"]
        assert isinstance(module, Backbone)
        return module

    @property
    def head(self) -> nn.Module | None:
        assert self.ema is not None
        return self.ema.module["head"] if "head" in self.ema.module else None

    def state_dict(self) -> dict[str, Any]:
        return self.ema.state_dict() if self.ema is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict)

    def _with_head(self, state: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint of an older leapkd averaged the student alone (keys `module.<student key>`):
        its average continues, and the head's starts from the restored live head."""
        if any(key.startswith("module.student.") for key in state):
            return state
        assert self.ema is not None and self.live is not None
        upgraded = {f"module.student.{key.removeprefix('module.')}": value for key, value in state.items()}
        if "head" in self.live:
            upgraded |= {f"module.head.{k}": v.detach().clone() for k, v in self.live["head"].state_dict().items()}
        return upgraded


def kept_student(lane: Lane, ema: StudentEma | None) -> Backbone:
    """The student a run saves, snapshots and evaluates: the EMA one when `ema` is given."""
    return ema.student if ema is not None else lane.student


def kept_head(lane: Lane, ema: StudentEma | None) -> nn.Module | None:
    """The student's classification head that goes with `kept_student`."""
    return ema.head if ema is not None else lane.method.student_classifier
