"""The base of the callbacks that act for one student of a run (its FLOPs, EMA, evaluations,
metrics log, snapshots): a run of several students installs one of each per student."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback

from leapkd.engine.lane import Lane
from leapkd.engine.module import DistillModule


class StudentCallback(Callback):
    """Acts for the student of lane `lane_index` (0: the only one of a one-student run)."""

    lane_index = 0

    def lane(self, pl_module: L.LightningModule) -> Lane:
        assert isinstance(pl_module, DistillModule)
        return pl_module.lane_list[self.lane_index]

    @property
    def state_key(self) -> str:
        """Unique per student in the checkpoint (the first student's key is a one-student run's)."""
        return self._generate_state_key(lane=self.lane_index) if self.lane_index else super().state_key
