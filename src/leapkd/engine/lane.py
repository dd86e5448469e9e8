"""One student of a run and what it trains with: its method, optimizer state, schedule,
step record and random generators. A run trains one lane per student, all against one
teacher pass per batch (engine/teacher_pass.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from leapkd.config import DistillConfig
from leapkd.engine.accumulation import MicroBatches
from leapkd.engine.non_finite import NonFiniteLosses
from leapkd.methods import Method
from leapkd.models import Backbone
from leapkd.schedule import WarmupCosine


@dataclass
class StepRecord:
    """What one optimizer step did for one student; callbacks log, count and check it."""

    step: int
    epoch: int
    target_block: int  # the target block this step trained on
    teacher_blocks_run: int
    first_batch_teacher_blocks: int  # teacher blocks of a one-off pass (calibration), else 0
    metric: float | None
    loss: float
    parts: dict[str, float]
    lr: float
    level_up: bool
    method_values: dict[str, float | None]
    batch_size: int  # images per micro-batch
    micro_batches: int = 1  # batches accumulated into this optimizer step
    flops: int = 0  # training FLOPs so far, filled by the FLOP accounting callback
    evaluation: dict[str, float] = field(default_factory=dict)  # figures of an evaluation after this step
    flags: dict[str, bool] = field(default_factory=dict)  # the callbacks' step_flags, any over the ranks


class Lane(nn.Module):
    """A student, its method (projector, heads, curriculum) and its training state. `cfg` is
    the configuration the student would have in a run of its own."""

    def __init__(self, name: str, cfg: DistillConfig, student: Backbone, method: Method) -> None:
        super().__init__()
        self.name = name
        self.cfg = cfg
        self.student = student
        self.method = method
        self.scheduler: WarmupCosine | None = None
        self.lr = 0.0  # the peak learning rate
        self.seconds = {"teacher": 0.0, "student": 0.0, "metric": 0.0}  # its own phases
        self.non_finite = NonFiniteLosses(cfg.nan_policy)
        self.micro_batches = MicroBatches(cfg.accumulate_grad_batches)
        self.record: StepRecord | None = None  # its last step's record (None mid-accumulation or skipped)
        self.block = 0  # the target block of the step under way
        self.last_trained_block: int | None = None
        self.first_batch_blocks = 0  # teacher blocks of the one-off pass of this step's first micro-batch
        self.stopped = False  # early stopping ended this student's training; the others go on
        self.random: LaneRandom | None = None  # its own generators, in a run of several students
        self.random_start: torch.Tensor | None = None  # the CPU generator's state after it was built


class LaneRandom:
    """A student's own CPU (and CUDA) generator states, swapped in around its phases of a step,
    so what one student draws (drop path, dropout) never shifts another's draws."""

    def __init__(self, device: torch.device, cpu: torch.Tensor | None = None) -> None:
        self.device = device
        self.cpu = torch.get_rng_state() if cpu is None else cpu
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    @contextmanager
    def active(self) -> Iterator[None]:
        cpu, cuda = torch.get_rng_state(), self._get_cuda()
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)
        try:
            yield
        finally:
            self.cpu, self.cuda = torch.get_rng_state(), self._get_cuda()
            torch.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state(cuda, self.device)

    def _get_cuda(self) -> torch.Tensor | None:
        return torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"cpu": self.cpu, **({"cuda": self.cuda} if self.cuda is not None else {})}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.cpu = state["cpu"]
        if self.device.type == "cuda" and "cuda" in state:
            self.cuda = state["cuda"].cpu()
