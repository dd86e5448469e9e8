"""Shared test settings: deterministic, single-threaded-friendly, no network."""

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_core_for_auto_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """`num_workers: auto` gives 0 data workers in tests (as on a 1-core machine): hundreds
    of short runs in one process would each fork and start workers. Tests of the loader
    with workers ask for a number, and tests of `auto` patch the core count themselves."""
    from leapkd import hardware

    monkeypatch.setattr(hardware, "cpus_available", lambda: 1)


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
    from leapkd.engine.callbacks import StopOnSignal
    from leapkd.engine.module import DistillModule

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
