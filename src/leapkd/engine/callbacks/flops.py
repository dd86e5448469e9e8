"""FLOP accounting of every step against the fixed-last-block baseline (docs/method.md, section 1.7)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from torch import Tensor

from leapkd.accounting import FlopsLedger, student_step_flops, teacher_flops_by_depth
from leapkd.engine.callbacks.per_student import StudentCallback
from leapkd.engine.lane import Lane
from leapkd.engine.module import DistillModule


class FlopAccounting(StudentCallback):
    """Measures the per-shape costs once when training starts, then charges every step.

    Fills `StepRecord.flops` (training FLOPs so far) before the other callbacks read it.
    The running totals travel in the checkpoint.
    """

    def __init__(self, lane: int = 0) -> None:
        self.lane_index = lane
        self.ledger: FlopsLedger | None = None
        self.job_total: int | None = None  # summed over every rank, when training ends
        self._restored: dict[str, int] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, DistillModule)
        lane = self.lane(pl_module)
        with _leaves_no_trace(lane, pl_module.device):
            sample = _sample_batch(pl_module)
            with trainer.precision_plugin.forward_context():  # the step's autocast (a bf16 teacher needs it)
                self.ledger = FlopsLedger(
                    teacher_by_depth=teacher_flops_by_depth(pl_module.teacher, sample),
                    student_step=student_step_flops(_student_step(pl_module, lane, sample)),
                )
        if self._restored is not None:
            self.ledger.load_state_dict(self._restored)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        assert self.ledger is not None
        record = self.lane(pl_module).record
        if record is None:  # a skipped batch
            return
        once = record.first_batch_teacher_blocks
        extra = self.ledger.teacher_by_depth[once - 1] if once else 0
        for micro in range(record.micro_batches):  # the costs are measured per batch
            self.ledger.add_step(record.teacher_blocks_run, extra if micro == 0 else 0)
        record.flops = self.total

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        mine = torch.tensor(float(self.total), dtype=torch.float64, device=pl_module.device)
        # float64: job totals can pass int64's range; relative error stays ~1e-16
        self.job_total = round(float(trainer.strategy.reduce(mine, reduce_op="sum")))

    @property
    def total(self) -> int:
        return 0 if self.ledger is None else self.ledger.teacher_flops + self.ledger.student_flops

    def state_dict(self) -> dict[str, Any]:
        return self.ledger.state_dict() if self.ledger is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict)


@contextmanager
def _leaves_no_trace(lane: Lane, device: torch.device) -> Iterator[None]:
    """Counting FLOPs changes nothing the run goes on with: the random generators (the sample's
    augmentation draws from them) and the student's buffers (batch-norm statistics) are as before."""
    buffers = [(b, b.detach().clone()) for module in (lane.student, lane.method) for b in module.buffers()]
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(lane.cfg.seed)  # the same sample for every student
        yield
    with torch.no_grad():
        for buffer, saved in buffers:
            buffer.copy_(saved)


def _sample_batch(module: DistillModule) -> Tensor:
    """One batch of training images (FLOPs depend on tensor shapes only)."""
    n = min(module.cfg.batch_size, len(module.train_set))
    return module.normalize(torch.stack([module.train_set[i][0] for i in range(n)]).to(module.device))


def _student_step(module: DistillModule, lane: Lane, images: Tensor) -> Callable[[], Tensor]:
    """The student's part of one step: a function returning its loss (the teacher's targets
    are computed here, outside it, so a FLOP count of it is the student's)."""
    with torch.no_grad():
        targets = lane.method.targets(module.teacher, images)
    labels = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
    return lambda: lane.method.loss(lane.student, images, targets, labels).loss
