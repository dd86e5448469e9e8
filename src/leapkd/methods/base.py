"""What a distillation method is to the engine: a module with hooks, and what flows through them.

A method says which teacher blocks it needs this step (the teacher runs only up to the
deepest), builds the targets from them, computes the loss of the student's output against
them, and reports a progress metric; curriculum hooks let it move its target. The engine
calls these hooks in a fixed order every step (targets -> loss -> backward/step ->
progress -> after_step) and never names a concrete method; a method never calls the
engine. A method also declares what it logs: its loss terms (metrics.csv columns
`loss_<term>`, drawn in the loss plot), extra per-step values, and summary fields.

Register one with `@leapkd.register_method("name")` on a subclass that sets `Args` to its
own `MethodArgs` class (see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from leapkd.config import MethodArgs
from leapkd.models import Backbone, Features
from leapkd.summary import MethodSummary

LrRestart = Literal["peak", "envelope"]


@dataclass
class StudentOutput:
    """The student's features for one batch."""

    features: Features  # the last level, normalised
    embed: Features | None = None  # raw patch projection, when the method asks for it
    taps: dict[int, Features] = field(default_factory=dict)  # un-normalised features of the tapped levels


@dataclass
class Targets:
    """What the teacher produced for one batch."""

    depth: int  # number of teacher levels that were run
    patch: Tensor  # (B, N_t, D_target)
    grid: tuple[int, int]  # the target's grid (N_t = rows x columns)
    cls: Tensor | None = None  # (B, D_target) when the CLS loss is on
    embed: Features | None = None  # teacher raw patch projection when that loss is on
    spectral: dict[int, Features] = field(default_factory=dict)  # un-normalised features per teacher level
    logits: Tensor | None = None  # teacher logits (B, classes) when logit KD is on
    layers: dict[int, Features] = field(default_factory=dict)  # normalised features per level (layer by layer)


@dataclass
class LossOutput:
    loss: Tensor
    parts: dict[str, Tensor]  # each declared term before weighting, detached, keyed loss_<term>
    projected: Tensor | None = None  # projected student patch tokens (B, P, D_target), for the metric


def identity_reduce(x: Tensor) -> Tensor:
    return x


class Method(nn.Module):
    """The hooks the engine calls; defaults describe a method without a curriculum."""

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

    # ----- declarations ------------------------------------------------------------
    def loss_terms(self) -> list[str]:
        """The loss parts this configuration produces (metrics.csv columns loss_<term>)."""
        return []

    def log_row(self) -> dict[str, float | None]:
        """This step's values of `log_values`."""
        return {}

    def summary(self) -> MethodSummary:
        """Method fields of summary.json (a curriculum's start block and moves)."""
        return MethodSummary(start_block=self.target_block, level_ups=[], level_up_events=[])

    # ----- what the student and the teacher must provide ---------------------------------
    def student_taps(self) -> list[int]:
        """Student levels whose un-normalised features the loss needs this step."""
        return []

    @property
    def needs_patch_projection(self) -> bool:
        """Whether the loss compares the raw patch-projection outputs."""
        return False

    @property
    def needs_teacher_head(self) -> bool:
        """Whether the teacher must be given a fitted linear head (logit KD, headless teacher)."""
        return False

    def set_teacher_head(self, state: dict[str, Tensor]) -> None:
        raise NotImplementedError(f"method {self.name} has no teacher head")

    @property
    def student_classifier(self) -> nn.Module | None:
        """The student's classification head on its pooled last-level features, when the method trains one."""
        return None

    # ----- one step ---------------------------------------------------------------
    @property
    def target_block(self) -> int:
        """The deepest teacher level this step's target needs."""
        raise NotImplementedError

    def targets(self, teacher: Backbone, images: Tensor) -> Targets:
        raise NotImplementedError

    def loss(self, student: StudentOutput, targets: Targets, labels: Tensor | None = None) -> LossOutput:
        raise NotImplementedError

    @torch.no_grad()
    def progress(self, out: LossOutput, targets: Targets) -> Tensor | None:
        """The progress metric of this step on this rank (a 0-d tensor on the device), or None.

        Left on the device: the engine averages it over the ranks (unless `progress_per_rank`)
        and brings it to the host together with the step's other figures, in one transfer;
        `after_step` gets the float."""
        return None

    # ----- curriculum hooks ---------------------------------------------------------
    def on_first_batch(self, teacher: Backbone, student: StudentOutput, images: Tensor) -> int:
        """Called once, on the first batch of a fresh run; returns the teacher blocks it ran."""
        return 0

    def after_step(self, metric: float | None) -> bool:
        """Called after every optimizer step; True if the target moved."""
        return False

    def after_epoch(self) -> bool:
        """Called at every epoch end; True if the target moved."""
        return False

    def lr_restart(self) -> LrRestart | None:
        """How the learning rate restarts when the target moves (None: it does not)."""
        return None
