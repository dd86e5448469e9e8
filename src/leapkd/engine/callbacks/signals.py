"""SIGINT/SIGTERM: checkpoint and stop after the current step, on every rank together."""

from __future__ import annotations

import signal
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from leapkd.engine.module import DistillModule


class StopOnSignal(Callback):
    """Installed when training starts, over Lightning's own SIGTERM handler (which would
    broadcast from inside the handler and hang when the signal reaches one rank only).

    A signal only sets `requested` on the process that received it; the step's flag `stop`
    combines the requests of all ranks (in the step's one collective), so all ranks stop
    after the same step (`stopped`). A second Ctrl-C interrupts at once.
    """

    def __init__(self) -> None:
        self.requested = False
        self.stopped = False
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            f"\n{signal.Signals(signum).name}: saving a checkpoint after this step, then stopping "
            "(press Ctrl-C again to abort at once)",
            flush=True,
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, DistillModule)
        pl_module.step_flags["stop"] = lambda: self.requested
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                old = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                continue
            self._old.setdefault(sig, old)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        assert isinstance(pl_module, DistillModule)
        if pl_module.record is None:  # mid-accumulation or a skipped batch: stop at a step
            return
        self.stopped = pl_module.record.flags["stop"]
        if self.stopped:
            trainer.should_stop = True

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
