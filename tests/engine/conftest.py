import pytest

from leapkd.engine.callbacks import StopOnSignal
from leapkd.engine.module import DistillModule


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Make a run behave as if Ctrl-C arrived during optimizer step `step` (0-based)."""
    real = DistillModule.training_step

    def training_step(self, batch, batch_idx):
        if self.global_step == step:
            next(c for c in self.trainer.callbacks if isinstance(c, StopOnSignal)).requested = True
        return real(self, batch, batch_idx)

    monkeypatch.setattr(DistillModule, "training_step", training_step)


@pytest.fixture
def interrupt_at():
    """`interrupt_at(monkeypatch, step)`: the next run stops as on Ctrl-C during `step`."""
    return _interrupt_at
