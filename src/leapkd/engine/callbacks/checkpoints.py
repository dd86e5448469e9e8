"""When checkpoints are written, and how: atomically, with the previous one kept."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint

from leapkd.engine.callbacks.signals import StopOnSignal
from leapkd.engine.module import DistillModule


class CheckpointPolicy(Checkpoint):
    """`path` at every epoch end, every `every` steps when set, and when the run stops early.

    A `Checkpoint` callback, so Lightning runs its epoch-end hook after the module's (the
    curriculum's epoch-end level-up is in the checkpoint) and its batch-end hook after the
    other callbacks (the stop decision of `StopOnSignal` is known).
    """

    def __init__(self, path: Path, every: int | None, stop: StopOnSignal) -> None:
        self.path, self.every, self.stop = path, every, stop

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        assert isinstance(pl_module, DistillModule)
        if pl_module.record is None:  # only after an optimizer step
            return
        if self.stop.stopped or (self.every and trainer.global_step % self.every == 0):
            trainer.save_checkpoint(self.path)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.stop.stopped:
            trainer.save_checkpoint(self.path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file, fsync, keep the previous checkpoint as `*.prev`, rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.replace(path, path.with_name(path.name + ".prev"))
        os.replace(tmp, path)
