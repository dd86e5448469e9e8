"""The progress bar: loss, metric, the target block as b/L and the last evaluation."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from leapkd.engine.callbacks.evaluation import EvaluateDuringTraining
from leapkd.engine.module import DistillModule


class CurriculumProgressBar(TQDMProgressBar):
    """Shows the last optimizer step's record (host values already: the bar adds no transfer
    from the device), not Lightning's logged metrics."""

    def __init__(self, num_blocks: int, evaluation: EvaluateDuringTraining | None = None) -> None:
        super().__init__()
        self.num_blocks, self.evaluation = num_blocks, evaluation
        self._shown: dict[str, Any] = {}

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        assert isinstance(pl_module, DistillModule)
        record = pl_module.record
        if record is not None:  # else the last step's values stay (mid-accumulation, a skipped step)
            self._shown = {"loss": f"{record.loss:.4f}", "block": f"{pl_module.method.target_block}/{self.num_blocks}"}
            if record.metric is not None:
                self._shown["metric"] = f"{record.metric:.4f}"
        items |= self._shown
        if self.evaluation is not None and self.evaluation.latest is not None:
            items[self.evaluation.metric] = f"{self.evaluation.latest[self.evaluation.metric]:.3f}"
        return items
