"""When checkpoints are written, and how: atomically, with the previous one kept."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint

from leapkd.disk import write_atomic
from leapkd.engine.callbacks.evaluation import EvaluateDuringTraining
from leapkd.engine.callbacks.signals import StopOnSignal
from leapkd.engine.module import DistillModule


class CheckpointPolicy(Checkpoint):
    """`last` at every epoch end, every `every` steps and every `every_minutes` minutes when
    set, and when the run stops early (a signal, early stopping); a student's `best` after a
    step whose evaluation of it was a new best (`bests`, with eval_every).

    A `Checkpoint` callback, so Lightning runs its epoch-end hook after the module's (the
    curriculum's epoch-end level-up is in the checkpoint) and its batch-end hook after the
    other callbacks (the stop decision of `StopOnSignal` and the evaluation are known).
    """

    def __init__(
        self,
        last: Path,
        every: int | None,
        stop: StopOnSignal,
        every_minutes: float | None = None,
        bests: Sequence[tuple[EvaluateDuringTraining, Path]] = (),
    ) -> None:
        self.last, self.every, self.stop, self.every_minutes = last, every, stop, every_minutes
        self.bests = bests  # each student's evaluation and where its best checkpoint goes
        self._last_saved = time.monotonic()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, DistillModule)
        if self.every_minutes is not None:  # rank 0's clock decides; the flag reaches every rank with the step
            pl_module.step_flags["checkpoint_due"] = lambda: trainer.is_global_zero and self._minutes_passed()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        assert isinstance(pl_module, DistillModule)
        record = pl_module.record
        if record is None:  # only after an optimizer step
            return
        due = (self.every and trainer.global_step % self.every == 0) or record.flags.get("checkpoint_due", False)
        if self.stop.stopped or trainer.should_stop or due:
            self._save(trainer, self.last)
        for evaluation, best in self.bests:
            if evaluation.improved:
                trainer.save_checkpoint(best)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.stop.stopped:
            self._save(trainer, self.last)

    def _minutes_passed(self) -> bool:
        assert self.every_minutes is not None
        return time.monotonic() - self._last_saved >= 60 * self.every_minutes

    def _save(self, trainer: L.Trainer, path: Path) -> None:
        trainer.save_checkpoint(path)
        self._last_saved = time.monotonic()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file, fsync, keep the previous checkpoint as `*.prev`, rename
    (`leapkd.disk.write_atomic`: a full disk leaves both earlier checkpoints as they were).
    (Reading is Lightning's: every storage stays on the CPU, then each rank moves the
    restored states to its own device.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda f: torch.save(checkpoint, f), keep_previous=True)
