"""The progress bar: loss, metric, the target block as b/L and the last evaluation."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from leapkd.engine.callbacks.evaluation import EvaluateDuringTraining


class CurriculumProgressBar(TQDMProgressBar):
    def __init__(self, num_blocks: int, evaluation: EvaluateDuringTraining | None = None) -> None:
        super().__init__()
        self.num_blocks, self.evaluation = num_blocks, evaluation

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        block = items.get("block")
        if isinstance(block, int | float | str):  # logged metrics are floats (the type also allows dicts)
            items["block"] = f"{int(float(block))}/{self.num_blocks}"
        for key in ("loss", "metric"):
            value = items.get(key)
            if isinstance(value, int | float | str):
                items[key] = f"{float(value):.4f}"
        if self.evaluation is not None and self.evaluation.latest is not None:
            items[self.evaluation.metric] = f"{self.evaluation.latest[self.evaluation.metric]:.3f}"
        return items
