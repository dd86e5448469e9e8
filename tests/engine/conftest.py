from pathlib import Path

import pytest

from leapkd.engine.callbacks import StopOnSignal
from leapkd.engine.module import DistillModule

TINY = dict(
    teacher="vit-nano",
    allow_random_teacher=True,
    student="vit-nano",
    image_size=64,
    data="fashion-mnist",
    subset_per_class=4,
    batch_size=8,
    epochs=3,
    warmup_steps=2,
    precision="32",  # the same numbers on every CPU (auto picks bf16 where the CPU computes it)
    progress=False,
)


@pytest.fixture
def tiny(tmp_path: Path) -> dict:
    """Settings of a seconds-long run: 6-block nano teacher and student, 40 images, 5 steps an epoch."""
    return dict(TINY, output_dir=str(tmp_path / "runs"))


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
