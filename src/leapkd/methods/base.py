"""What a distillation method is to the engine: one step in three phases, and a few hooks.

One step: `targets` runs the teacher (no gradient, only as deep as `target_block` needs;
the engine times and FLOP-counts it as teacher work), `loss` runs the student on the batch
and returns the loss with its logged parts, and `progress` reads the step's micro-batches,
joined along the batch, for the progress metric. Around the step: `on_first_batch` (a
one-off pass of a fresh run), `after_step` and `after_epoch` (a moving target: True when it
moved, and the learning rate then restarts as `lr_restart` says). A method declares what it
logs: its loss terms (metrics.csv columns `loss_<term>`), extra per-step values
(`log_values`, filled by `log_row`) and its part of summary.json (`summary`). It may own two
heads: `student_classifier` (averaged by EMA, scored by evaluation) and `teacher_head`
(a frozen linear head the engine fits on the teacher's features before training).

The engine never names a concrete method and a method never calls the engine. What a
method needs of the teacher and the student beyond this (levels, tokens, projectors) is its
own business: the feature methods keep theirs in `methods/feature_io.py`.

Register one with `@leapkd.register_method("name")` on a subclass that sets `Args` to its
own `MethodArgs` class (see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Generic, Literal, TypeVar

import torch
from torch import Tensor, nn

from leapkd.config import MethodArgs
from leapkd.models import Backbone
from leapkd.summary import MethodSummary

LrRestart = Literal["peak", "envelope"]


@dataclass
class TeacherPass:
    """What the teacher produced for one batch. A method subclasses it with its own fields;
    under gradient accumulation the engine joins every field along the batch (tensors,
    `Features` and dicts of them; anything else is taken from the first micro-batch)."""

    depth: int  # teacher levels that were run: the step is charged for these


@dataclass
class LossOutput:
    """The student's side of one step."""

    loss: Tensor
    parts: dict[str, Tensor]  # each declared term before weighting, detached, keyed loss_<term>
    # batch-first tensors `progress` reads; the engine detaches them and joins the micro-batches'
    saved: dict[str, Tensor] = field(default_factory=dict)


T = TypeVar("T", bound=TeacherPass)  # a method's own teacher pass


def identity_reduce(x: Tensor) -> Tensor:
    return x


class Method(nn.Module, Generic[T]):
    """The contract, generic in the method's `TeacherPass`; the defaults describe a method whose
    target does not move."""

    name: ClassVar[str]  # set by register_method
    Args: ClassVar[type[MethodArgs]] = MethodArgs
    log_values: ClassVar[tuple[str, ...]] = ()  # extra metrics.csv columns, filled by log_row()

    def __init__(
        self, args: MethodArgs, teacher: Backbone, student: Backbone, *, num_classes: int | None, seed: int
    ) -> None:
        """`num_classes`: of the training data (None: unlabelled); `seed`: the run's seed."""
        super().__init__()
        self.args = args
        # averages a scalar over all ranks; the engine installs the distributed one
        self.reduce: Callable[[Tensor], Tensor] = identity_reduce
        # True: `after_step` gets this rank's progress metric, not the mean over the ranks
        self.progress_per_rank = False
        # how the learning rate restarts when the target moves (None: it does not)
        self.lr_restart: LrRestart | None = None
        # logit KD with a headless teacher: frozen, its weights fitted by the engine before training
        self.teacher_head: nn.Linear | None = None

    # ----- declarations ------------------------------------------------------------
    def loss_terms(self) -> list[str]:
        """The loss parts this configuration produces (metrics.csv columns loss_<term>)."""
        return []

    def log_row(self) -> dict[str, float | None]:
        """This step's values of `log_values`."""
        return {}

    def summary(self) -> MethodSummary:
        """The method's fields of summary.json."""
        return MethodSummary()

    @property
    def student_classifier(self) -> nn.Module | None:
        """The student's classification head, when the method trains one."""
        return None

    # ----- one step ---------------------------------------------------------------
    @property
    def target_block(self) -> int:
        """The deepest teacher level this step's target needs."""
        raise NotImplementedError

    def targets(self, teacher: Backbone, images: Tensor) -> T:
        """The teacher's part of the step (called under no_grad)."""
        raise NotImplementedError

    def loss(self, student: Backbone, images: Tensor, targets: T, labels: Tensor | None = None) -> LossOutput:
        """The student's part of the step: its forward pass and the loss against `targets`."""
        raise NotImplementedError

    @torch.no_grad()
    def progress(self, out: LossOutput, targets: T) -> Tensor | None:
        """The progress metric of this step on this rank (a 0-d tensor on the device), or None.

        Left on the device: the engine averages it over the ranks (unless `progress_per_rank`)
        and brings it to the host with the step's other figures, in one transfer;
        `after_step` gets the float."""
        return None

    # ----- lifecycle ----------------------------------------------------------------
    def on_first_batch(self, teacher: Backbone, student: Backbone, images: Tensor) -> int:
        """Called once, under no_grad, on the first batch of a fresh run; returns the teacher blocks it ran."""
        return 0

    def after_step(self, metric: float | None) -> bool:
        """Called after every optimizer step; True if the target moved."""
        return False

    def after_epoch(self) -> bool:
        """Called at every epoch end; True if the target moved."""
        return False
