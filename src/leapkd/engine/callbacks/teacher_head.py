"""Logit KD with a headless teacher: a linear head fitted on its features before training."""

from __future__ import annotations

import time
from collections.abc import Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from leapkd.engine.module import DistillModule
from leapkd.hardware import autocast_dtype
from leapkd.models import Backbone

TeacherHeadFitter = Callable[[Backbone, torch.dtype | None, int], nn.Linear]  # teacher, autocast dtype, workers


class TeacherHead(Callback):
    """Rank 0 fits the head with `fit` (training device, the run's precision, the run's data
    workers); the other ranks wait and receive it. A resumed run has it from its checkpoint and fits nothing."""

    def __init__(self, fit: TeacherHeadFitter) -> None:
        self.fit = fit
        self.seconds = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, DistillModule)
        if trainer.ckpt_path:
            return
        start = time.perf_counter()
        state: dict[str, Tensor] | None = None
        if trainer.is_global_zero:
            head = self.fit(pl_module.teacher, autocast_dtype(pl_module.precision), pl_module.num_workers)
            state = {k: v.cpu() for k, v in head.state_dict().items()}
            pl_module.notes.append("teacher head fitted on this rank")
        state = trainer.strategy.broadcast(state, src=0)
        assert state is not None  # rank 0 fitted it
        if not trainer.is_global_zero:
            pl_module.notes.append("teacher head received from rank 0")
        for lane in pl_module.lane_list:  # one teacher: one head for every student's method
            target = lane.method.teacher_head
            assert target is not None, "TeacherHead runs only for a method with a teacher head"
            target.load_state_dict(state)
        self.seconds = time.perf_counter() - start
