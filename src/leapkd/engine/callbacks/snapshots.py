"""Student snapshots along the way (`snapshot_every`), for time-to-accuracy curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from leapkd.engine.callbacks.ema import StudentEma, kept_student
from leapkd.engine.callbacks.per_student import StudentCallback
from leapkd.engine.module import DistillModule
from leapkd.models import save_student_file


class Snapshots(StudentCallback):
    """Rank 0 writes the student at step 0 (fresh runs) and every `every` steps, with the
    step, the training FLOPs and the wall seconds so far in the file's metadata."""

    def __init__(self, every: int, path_of_step: Any, ema: StudentEma | None = None, lane: int = 0) -> None:
        self.lane_index = lane
        self.every = every
        self.path_of_step = path_of_step  # step -> Path
        self.ema = ema  # when set, its student is the one saved

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.ckpt_path:
            self._save(trainer, pl_module, flops=0)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        record = self.lane(pl_module).record
        if record is not None and trainer.global_step % self.every == 0:
            self._save(trainer, pl_module, flops=record.flops)

    def _save(self, trainer: L.Trainer, pl_module: L.LightningModule, flops: int) -> None:
        assert isinstance(pl_module, DistillModule)
        if not trainer.is_global_zero:
            return
        path = Path(self.path_of_step(trainer.global_step))
        path.parent.mkdir(exist_ok=True)
        student = kept_student(self.lane(pl_module), self.ema)
        save_student_file(student, path, step=trainer.global_step, flops=flops, wall_seconds=pl_module.wall_seconds())
