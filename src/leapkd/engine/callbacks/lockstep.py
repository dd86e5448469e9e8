"""Debug mode (`LEAPKD_DEBUG_RANKS=1`): every rank must take the same decisions, every step.

Each rank gathers (block trained on, block after the step, metric) from all ranks and
requires them equal (unless the method decides per rank: `progress_per_rank`), and writes
its own trace `<run>/ranks/rank<r>.csv`, ending with a hash of the final student weights.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, TextIO, cast

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from leapkd.engine.module import DistillModule

DEBUG_RANKS_ENV = "LEAPKD_DEBUG_RANKS"


class LockStepCheck(Callback):
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._trace: TextIO | None = None

    @staticmethod
    def enabled() -> bool:
        return os.environ.get(DEBUG_RANKS_ENV) == "1"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, DistillModule)
        self.directory.mkdir(exist_ok=True)
        self._trace = (self.directory / f"rank{trainer.global_rank}.csv").open("w")
        self._trace.write("step,target_block,next_block,metric\n")
        for note in pl_module.notes:
            self._trace.write(f"# {note}\n")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        assert isinstance(pl_module, DistillModule) and self._trace is not None
        record = pl_module.record
        if record is None:
            return
        now = pl_module.method.target_block
        mine = torch.tensor(
            [record.target_block, now, record.metric or 0.0], dtype=torch.float64, device=pl_module.device
        )
        every = cast(Tensor, pl_module.all_gather(mine)).reshape(-1, 3)  # a tensor in, a tensor out
        if not pl_module.method.progress_per_rank and not torch.equal(every, every[:1].expand_as(every)):
            raise RuntimeError(f"ranks diverged at step {record.step}: (block, next block, metric) = {every.tolist()}")
        self._trace.write(f"{record.step},{record.target_block},{now},{record.metric}\n")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, DistillModule)
        if self._trace is None:
            return
        digest = hashlib.sha1()
        for lane in pl_module.lane_list:  # every student's weights, in lane order
            for name, tensor in sorted(lane.student.state_dict().items()):
                digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
        self._trace.write(f"# student sha1 {digest.hexdigest()}\n")
        self._trace.close()
