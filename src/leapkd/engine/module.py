"""The LightningModule: one training step in a fixed order, and nothing else.

Order of a step: teacher targets -> student loss -> backward/step -> progress metric ->
curriculum (the method's `after_step`). The teacher is held outside the module's children:
it is never in the optimizer, in a checkpoint or in DDP's synchronised parameters.
Optimisation is manual so each part can be timed. Logging, FLOP accounting, snapshots,
the rank lock-step check, signals and checkpoints are callbacks (`leapkd.engine.callbacks`)
that read the step's `StepRecord`. The module never names a concrete method.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, cast

import lightning as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor
from torch.utils.data import DataLoader

from leapkd.config import DistillConfig
from leapkd.data import LabeledImages, skipped_mask
from leapkd.data.batch_augment import BatchAugment
from leapkd.data.sampling import seeded_loader
from leapkd.data.transforms import Normalize
from leapkd.engine.accumulation import MicroBatches, global_batch
from leapkd.engine.non_finite import NonFiniteLosses
from leapkd.engine.optimizers import build_optimizer, build_schedule, scaled_lr
from leapkd.engine.run_state import restore_run_state, run_state
from leapkd.engine.step_clock import Mark, StepClock
from leapkd.engine.step_values import no_gradient_sync, step_values
from leapkd.hardware import autocast_dtype
from leapkd.methods import Method
from leapkd.models import Backbone
from leapkd.schedule import WarmupCosine


@dataclass
class StepRecord:
    """What one optimizer step did; callbacks log, count and check it."""

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


class DistillModule(L.LightningModule):
    """Student + method trained against a frozen teacher."""

    def __init__(
        self,
        cfg: DistillConfig,
        teacher: Backbone,
        student: Backbone,
        method: Method,
        train_set: LabeledImages,
        precision: str = "32",
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        self.student = student
        self.method = method
        self.__dict__["teacher"] = teacher  # not a child module, on purpose
        self.train_set = train_set  # uint8 images, normalised on the device with the teacher's statistics
        self.precision = precision  # resolved (never "auto")
        self.num_workers = 0  # data loader processes; `distill` sets it from the cores per process
        self.scheduler: WarmupCosine | None = None
        self.seconds = {"wall": 0.0, "teacher": 0.0, "student": 0.0, "metric": 0.0}
        self.clock = StepClock(self.seconds)  # CUDA events on a GPU: timing never waits for the device
        # flags the callbacks raise for a step (stop on a signal, a checkpoint due); the step
        # combines them over the ranks in its one collective: StepRecord.flags
        self.step_flags: dict[str, Callable[[], bool]] = {}
        self.started = False  # first batch done (fresh run) or state restored (resume)
        self.batches_done_in_epoch = 0
        self.restored: dict[str, Any] | None = None
        self.record: StepRecord | None = None  # the last step's record
        self.steps_taken = 0  # optimizer steps taken by this process (a resumed run counts from 0)
        self.notes: list[str] = []  # one-off events for the rank trace
        self.non_finite = NonFiniteLosses(cfg.nan_policy)
        self.last_trained_block: int | None = None
        self.micro_batches = MicroBatches(cfg.accumulate_grad_batches)
        self.batch_augment = BatchAugment(cfg.mixup, cfg.aug_erasing)
        self._normalize = Normalize(teacher.mean, teacher.std)
        self.peak_memory_bytes: int | None = None  # of a CUDA device, read when training ends

    teacher: Backbone

    # ----- data and optimizer ---------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        position = self.restored["position"] if self.restored is not None else None
        cfg = self.cfg
        return seeded_loader(
            self.train_set,
            cfg.seed,
            cfg.batch_size,
            self.num_workers,
            self.global_rank,
            self.trainer.world_size,
            position,
            pin_memory=self.device.type == "cuda",
            accumulate=cfg.accumulate_grad_batches,
            repeats=cfg.repeated_augmentation,
            python_rngs=cfg.aug_randaugment is not None,
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        self.lr = scaled_lr(self.cfg, self.global_batch)
        # the fused kernel is one call per step instead of a Python loop over tensors (CPU and
        # GPU); Lightning's mixed-precision plugin refuses to clip gradients of fused optimizers
        fused = self.device.type in ("cpu", "cuda") and self.precision == "32"
        return build_optimizer(self.cfg, (self.student, self.method), self.lr, fused)

    @property
    def global_batch(self) -> int:
        """Images per optimizer step over all ranks."""
        return global_batch(self.cfg, self.trainer.world_size)

    # ----- lifecycle ------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self.teacher.to(self.device)
        self.method.reduce = self._mean_over_ranks
        self.clock.device = self.device

    def on_train_start(self) -> None:
        """After Lightning restored the loops and optimizer: the schedule and the run state."""
        opt = self._optimizer().optimizer
        self.scheduler = build_schedule(self.trainer, self.cfg, opt, self.lr)
        if self.restored is not None:
            restore_run_state(self.restored, self.scheduler, self.seconds, self.device)
            self.started = True
        self.clock.start_wall()

    def on_train_end(self) -> None:
        """While the module is still on its training device (Lightning's teardown, before
        `on_fit_end`, moves it to the CPU, where NCCL refuses tensors)."""
        self.clock.settle()
        self.seconds["wall"] = self.wall_seconds()
        _merge_skipped_images(self)
        if self.device.type == "cuda":
            self.peak_memory_bytes = torch.cuda.max_memory_allocated(self.device)

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 loader images -> float32, normalised with the teacher's statistics (held on the device)."""
        return self._normalize(images)

    def wall_seconds(self) -> float:
        """Training wall time so far, across resumes."""
        return self.clock.wall()

    # ----- one step -------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = self.normalize(batch[0]), batch[1]
        images = self.batch_augment(images)  # mixup, random erasing (calibration included)
        method, clock = self.method, self.clock
        self.record = None  # stays None mid-accumulation and for a skipped step
        first_batch_blocks = 0 if self.started else _first_batch(self, images)
        self.started = True
        block = method.target_block

        t0 = clock.mark()
        targets = method.targets(self.teacher, images)
        t1 = clock.mark()
        out = method.loss(self.student, images, targets, labels)
        self.non_finite.observe(out.loss)
        last = self.micro_batches.add(out, targets)
        with nullcontext() if last else no_gradient_sync(self.trainer.strategy):  # one all-reduce per optimizer step
            self.manual_backward(out.loss / self.cfg.accumulate_grad_batches)
        t2 = clock.mark()
        clock.add("teacher", t0, t1)
        clock.add("student", t1, t2)
        if not last:  # accumulate the next micro-batch first
            return
        _complete_step(self, batch_idx, block, first_batch_blocks, images.shape[0], t2)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip here, inside the optimizer step: Lightning's mixed-precision plugin calls this
        hook after it unscaled fp16 gradients (clipping before `step()` would clip the scaled ones)."""
        if self.cfg.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.cfg.grad_clip, gradient_clip_algorithm="norm")

    def _optimizer_step(self) -> float:
        """Step the optimizer (clipping in `on_before_optimizer_step`) and the schedule, clear
        the gradients; returns the LR used."""
        opt = self._optimizer()
        lr = float(opt.param_groups[0]["lr"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        assert self.scheduler is not None
        self.scheduler.step()
        return lr

    def _optimizer(self) -> LightningOptimizer:
        """The one optimizer `configure_optimizers` returns (`optimizers()` is typed as one or a list)."""
        return cast(LightningOptimizer, self.optimizers())

    def on_train_epoch_start(self) -> None:
        self.batches_done_in_epoch = 0

    def on_train_epoch_end(self) -> None:
        if self.method.after_epoch():
            _restart_schedule(self, decided_at=self.global_step)

    def _mean_over_ranks(self, value: Tensor) -> Tensor:
        return self.trainer.strategy.reduce(value.to(self.device), reduce_op="mean")

    # ----- checkpoint state --------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.clock.settle()
        self.seconds["wall"] = self.wall_seconds()
        assert self.scheduler is not None
        position = {"epoch": self.current_epoch, "batches_done": self.batches_done_in_epoch}
        checkpoint["leapkd"] = run_state(self.scheduler, self.seconds, position, self.device)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.restored = checkpoint["leapkd"]


def _complete_step(
    module: DistillModule, batch_idx: int, block: int, first_batch_blocks: int, batch_size: int, since: Mark
) -> None:
    """The optimizer step that closes the micro-batches of one step: the progress metric on
    them joined, the step's figures in one host transfer, a skip for a non-finite loss, the
    update, the curriculum's decision and the step's `StepRecord` (`since`: the clock's mark
    after the last backward)."""
    method, step, clock = module.method, module.global_step, module.clock
    out, targets = module.micro_batches.joined()
    micro_batches = len(module.micro_batches)
    module.micro_batches.clear()
    metric = method.progress(out, targets)
    clock.add("metric", since, clock.mark())
    flags = {name: bool(ask()) for name, ask in module.step_flags.items()}
    values = step_values(
        module.trainer.strategy,
        module.non_finite.take_flag(),
        flags,
        out,
        metric,
        metric_per_rank=method.progress_per_rank,
    )
    clock.settle()
    if module.non_finite.skip(values.bad, values.loss, values.parts, step):
        module._optimizer().zero_grad(set_to_none=True)
        return
    t3 = clock.mark()
    lr = module._optimizer_step()
    module.steps_taken += 1
    clock.add("student", t3, clock.mark())  # read at the next step's transfer
    moved = method.after_step(values.metric)
    if moved:
        _restart_schedule(module, decided_at=step)
    module.batches_done_in_epoch = batch_idx + 1
    module.last_trained_block = block
    module.record = StepRecord(
        step=step,
        epoch=module.current_epoch,
        target_block=block,
        teacher_blocks_run=targets.depth,
        first_batch_teacher_blocks=first_batch_blocks,
        metric=values.metric,
        loss=values.loss,
        parts=values.parts,
        lr=lr,
        level_up=moved,
        method_values=method.log_row(),
        batch_size=batch_size,
        micro_batches=micro_batches,
        flags=values.flags,
    )


def _restart_schedule(module: DistillModule, decided_at: int) -> None:
    """After the target moved: restart the LR schedule if the method asks (the level-up was
    decided after `decided_at` optimizer steps)."""
    mode = module.method.lr_restart
    if mode is not None and module.scheduler is not None:
        module.scheduler.restart(mode, decided_at)


def _first_batch(module: DistillModule, images: Tensor) -> int:
    """A fresh run's first batch: the method's one-off pass (LEAP's calibration), timed as
    teacher work; returns the teacher blocks it ran."""
    method, clock = module.method, module.clock
    start = clock.mark()
    with torch.no_grad():
        blocks = method.on_first_batch(module.teacher, module.student, images)
    clock.add("teacher", start, clock.mark())
    return blocks


def _merge_skipped_images(module: DistillModule) -> None:
    """Each rank read its own shard: the unreadable images any of them met, on every rank."""
    mask = skipped_mask(module.train_set)
    if mask is not None and module.trainer.world_size > 1:
        total = module.trainer.strategy.reduce(mask.to(module.device, torch.float32), reduce_op="sum")
        mask.copy_(total.cpu() > 0)


def untrained_parameters(module: DistillModule, images: Tensor, labels: Tensor) -> list[str]:
    """Names of trainable parameters that one loss evaluation (under the run's autocast)
    leaves without a gradient."""
    dtype = autocast_dtype(module.precision)
    with torch.autocast(images.device.type, dtype=dtype, enabled=dtype is not None):
        targets = module.method.targets(module.teacher, images)
        loss = module.method.loss(module.student, images, targets, labels).loss
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return [n for (n, _), g in zip(named, grads) if g is None]
