"""metrics.csv (always) and TensorBoard (on request): one row per optimizer step.

The columns are the core columns plus what the method declares (its loss terms and log
values), so a new loss term is never dropped.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from leapkd.engine.module import DistillModule, StepRecord
from leapkd.rundir import MetricsWriter

CORE_COLUMNS = ("step", "epoch", "target_block", "teacher_blocks_run", "metric", "loss")
TAIL_COLUMNS = ("lr", "level_up", "flops", "wall_seconds")


def metric_columns(loss_terms: list[str], log_values: tuple[str, ...]) -> list[str]:
    """metrics.csv's header: core columns, the method's log values and loss terms, then the tail."""
    return [*CORE_COLUMNS[:5], *log_values, CORE_COLUMNS[5], *(f"loss_{t}" for t in loss_terms), *TAIL_COLUMNS]


def record_row(record: StepRecord, wall_seconds: float) -> dict[str, Any]:
    return {
        "step": record.step,
        "epoch": record.epoch,
        "target_block": record.target_block,
        "teacher_blocks_run": record.teacher_blocks_run,
        "metric": record.metric,
        **record.method_values,
        "loss": record.loss,
        **record.parts,
        "lr": record.lr,
        "level_up": int(record.level_up),
        "flops": record.flops,
        "wall_seconds": wall_seconds,
    }


class MetricsLog(Callback):
    """Rank 0 appends each step's row to metrics.csv (flushed at once) and, with
    `tensorboard=True`, writes the same scalars to `tensorboard_dir`."""

    def __init__(self, path: Any, columns: list[str], tensorboard_dir: Any = None) -> None:
        self.path, self.columns, self.tensorboard_dir = path, columns, tensorboard_dir
        self._writer: MetricsWriter | None = None
        self._tensorboard: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        resume_step = trainer.global_step if trainer.ckpt_path else None
        self._writer = MetricsWriter(self.path, self.columns, resume_step)
        if self.tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter  # optional dependency, checked before the run

            self._tensorboard = SummaryWriter(str(self.tensorboard_dir), purge_step=resume_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        assert isinstance(pl_module, DistillModule)
        if self._writer is None or pl_module.record is None:
            return
        row = record_row(pl_module.record, pl_module.wall_seconds())
        self._writer.write(row)
        if self._tensorboard is not None:
            for key, value in row.items():
                if key != "step" and value is not None:
                    self._tensorboard.add_scalar(key, value, row["step"])

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
