"""metrics.csv (always) and the experiment trackers (`logger`): one row per optimizer step.

The columns are the core columns plus what the method declares (its loss terms and log
values), so a new loss term is never dropped, and, with `eval_every`, the evaluation's
figures (`eval_<figure>`, filled on the rows of the steps after which it ran).
"""

from __future__ import annotations

from typing import Any

import lightning as L

from leapkd.engine.callbacks.per_student import StudentCallback
from leapkd.engine.lane import StepRecord
from leapkd.engine.module import DistillModule
from leapkd.engine.trackers import Trackers
from leapkd.rundir import MetricsWriter

CORE_COLUMNS = ("step", "epoch", "target_block", "teacher_blocks_run", "metric", "loss")
TAIL_COLUMNS = ("lr", "level_up", "flops", "wall_seconds")


def metric_columns(loss_terms: list[str], log_values: tuple[str, ...], eval_figures: tuple[str, ...] = ()) -> list[str]:
    """metrics.csv's header: core columns, the method's log values and loss terms, the tail, then
    the evaluation's figures and seconds (when evaluating during training)."""
    evaluation = [f"eval_{f}" for f in (*eval_figures, "seconds")] if eval_figures else []
    return [
        *CORE_COLUMNS[:5],
        *log_values,
        CORE_COLUMNS[5],
        *(f"loss_{t}" for t in loss_terms),
        *TAIL_COLUMNS,
        *evaluation,
    ]


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
        **{f"eval_{k}": v for k, v in record.evaluation.items()},
    }


class MetricsLog(StudentCallback):
    """Rank 0 appends each step's row to metrics.csv (flushed at once) and sends the same
    scalars to the experiment trackers."""

    def __init__(self, path: Any, columns: list[str], trackers: Trackers | None = None, lane: int = 0) -> None:
        self.lane_index = lane
        self.path, self.columns, self.trackers = path, columns, trackers
        self._writer: MetricsWriter | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        resume_step = trainer.global_step if trainer.ckpt_path else None
        self._writer = MetricsWriter(self.path, self.columns, resume_step)
        if self.trackers is not None:
            self.trackers.open(resume_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        record = self.lane(pl_module).record
        if self._writer is None or record is None:
            return
        assert isinstance(pl_module, DistillModule)
        row = record_row(record, pl_module.wall_seconds())
        self._writer.write(row)
        if self.trackers is not None:
            self.trackers.log(row, row["step"])

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.on_fit_end(trainer, pl_module)
