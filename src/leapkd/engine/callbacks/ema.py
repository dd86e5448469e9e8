"""An exponential moving average of the student's weights (`ema_decay`), updated after every
optimizer step; when set, the EMA student is the one saved, snapshotted, exported and evaluated."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from timm.utils import ModelEmaV3

from leapkd.engine.module import DistillModule
from leapkd.models import Backbone


class StudentEma(Callback):
    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.ema: ModelEmaV3 | None = None
        self._restored: dict[str, Any] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        assert isinstance(pl_module, DistillModule)
        self.ema = ModelEmaV3(pl_module.student, decay=self.decay)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert self.ema is not None
        self.ema.to(pl_module.device)
        if self._restored is not None:
            self.ema.load_state_dict(self._restored)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        assert isinstance(pl_module, DistillModule) and self.ema is not None
        if pl_module.record is not None:  # after an optimizer step, not a micro-batch
            self.ema.update(pl_module.student)

    @property
    def student(self) -> Backbone:
        assert self.ema is not None
        module = self.ema.module
        assert isinstance(module, Backbone)
        return module

    def state_dict(self) -> dict[str, Any]:
        return self.ema.state_dict() if self.ema is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict)


def kept_student(module: DistillModule, ema: StudentEma | None) -> Backbone:
    """The student a run saves, snapshots and evaluates: the EMA one when there is one."""
    return ema.student if ema is not None else module.student
