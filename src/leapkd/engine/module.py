"""The LightningModule: one training step in a fixed order, and nothing else.

Order of a step: teacher targets -> student loss -> backward/step -> progress metric ->
curriculum (the method's `after_step`), for each student of the run (its `Lane`). With
several students the teacher runs once per batch, as deep as the deepest of their targets
(engine/teacher_pass.py), and one backward pass serves them all (their parameters are
disjoint, so each gets the gradients it would get alone). The teacher is held outside the
module's children: it is never in an optimizer, in a checkpoint or in DDP's synchronised
parameters. Optimisation is manual so each part can be timed. Logging, FLOP accounting,
snapshots, the rank lock-step check, signals and checkpoints are callbacks
(`leapkd.engine.callbacks`) that read each lane's `StepRecord`. The module never names a
concrete method.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, cast

import lightning as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor, nn
from torch.utils.data import DataLoader

from leapkd.config import DistillConfig
from leapkd.data import LabeledImages, skipped_mask
from leapkd.data.batch_augment import BatchAugment
from leapkd.data.sampling import seeded_loader
from leapkd.data.transforms import Normalize
from leapkd.engine.accumulation import global_batch
from leapkd.engine.lane import Lane, LaneRandom, StepRecord
from leapkd.engine.optimizers import build_optimizer, build_schedule, scaled_lr
from leapkd.engine.run_state import restore_run_state, run_state
from leapkd.engine.step_clock import StepClock
from leapkd.engine.step_values import no_gradient_sync, step_values
from leapkd.engine.teacher_pass import SharedTeacherPass
from leapkd.hardware import autocast_dtype
from leapkd.methods import Method
from leapkd.models import Backbone

__all__ = ["DistillModule", "Lane", "StepRecord", "untrained_parameters"]


class DistillModule(L.LightningModule):
    """Students (one `Lane` each, a single one in most runs) trained against a frozen teacher."""

    def __init__(
        self, cfg: DistillConfig, teacher: Backbone, lanes: list[Lane], train_set: LabeledImages, precision: str = "32"
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        self.__dict__["lane_list"] = lanes
        if len(lanes) == 1:  # a one-student run's checkpoint keys: student.*, method.*
            self.student, self.method = lanes[0].student, lanes[0].method
        else:  # lanes.<i>.student.*, lanes.<i>.method.*; `student`, `method`: the first's
            self.lanes = nn.ModuleList(lanes)
            self.__dict__["student"], self.__dict__["method"] = lanes[0].student, lanes[0].method
        self.__dict__["teacher"] = teacher  # not a child module, on purpose
        # several students: one teacher pass per batch serves them all (one student: the teacher itself)
        self.shared = SharedTeacherPass(teacher) if len(lanes) > 1 else None
        self.train_set = train_set  # uint8 images, normalised on the device with the teacher's statistics
        self.precision = precision  # resolved (never "auto")
        self.num_workers = 0  # data loader processes; `distill` sets it from the cores per process
        self.seconds = {"wall": 0.0, "teacher": 0.0, "student": 0.0, "metric": 0.0}  # the run's, all students
        self.clock = StepClock(self.seconds)  # CUDA events on a GPU: timing never waits for the device
        # flags the callbacks raise for a step (stop on a signal, a checkpoint due); the step
        # combines them over the ranks in its one collective: StepRecord.flags
        self.step_flags: dict[str, Callable[[], bool]] = {}
        self.started = False  # first batch done (fresh run) or state restored (resume)
        self.batches_done_in_epoch = 0
        self.restored: dict[str, Any] | None = None
        self.steps_taken = 0  # optimizer steps taken by this process (a resumed run counts from 0)
        self.counted = False  # a student's optimizer step counted this step (Lightning's global step)
        self.notes: list[str] = []  # one-off events for the rank trace
        self.batch_augment = BatchAugment(cfg.mixup, cfg.aug_erasing)
        self._normalize = Normalize(teacher.mean, teacher.std)
        self.peak_memory_bytes: int | None = None  # of a CUDA device, read when training ends

    teacher: Backbone
    lane_list: list[Lane]  # every student, in order (registered as `lanes` when several)
    student: Backbone  # the first student (the only one of a one-student run)
    method: Method

    @property
    def record(self) -> StepRecord | None:
        """This step's record of the first student that took an optimizer step (None
        mid-accumulation, or when every student skipped it)."""
        return next((lane.record for lane in self.lane_list if lane.record is not None), None)

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

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        # the fused kernel is one call per step instead of a Python loop over tensors (CPU and
        # GPU); Lightning's mixed-precision plugin refuses to clip gradients of fused optimizers
        fused = self.device.type in ("cpu", "cuda") and self.precision == "32"
        optimizers = []
        for lane in self.lane_list:
            lane.lr = scaled_lr(lane.cfg, self.global_batch)
            optimizers.append(build_optimizer(lane.cfg, (lane.student, lane.method), lane.lr, fused))
        return optimizers

    @property
    def lr(self) -> float:
        """The first student's peak learning rate."""
        return self.lane_list[0].lr

    @property
    def global_batch(self) -> int:
        """Images per optimizer step over all ranks."""
        return global_batch(self.cfg, self.trainer.world_size)

    # ----- lifecycle ------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self.teacher.to(self.device)
        for lane in self.lane_list:
            lane.method.reduce = self._mean_over_ranks
        self.clock.device = self.device

    def on_train_start(self) -> None:
        """After Lightning restored the loops and optimizer: the schedules and the run state."""
        for lane, opt in zip(self.lane_list, self.optimizer_list()):
            lane.scheduler = build_schedule(self.trainer, lane.cfg, opt.optimizer, lane.lr)
        first = self.lane_list[0]
        assert first.scheduler is not None
        if self.restored is not None:
            restore_run_state(self.restored, first.scheduler, self.seconds, self.device)
            self.started = True
        if self.shared is not None:  # each student draws from its own generators
            _start_lane_states(self)
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
        lanes = [lane for lane in self.lane_list if not lane.stopped]
        fresh, self.started = not self.started, True
        teacher = self.teacher
        if self.shared is not None:
            deepest = max(self.teacher.num_levels if fresh else lane.method.target_block for lane in lanes)
            self.shared.start(images, deepest)
            teacher = cast(Backbone, self.shared)  # serves the methods' teacher calls from one pass
        losses, last = [], False
        for lane in lanes:
            with lane.random.active() if lane.random is not None else nullcontext():
                loss, last = _lane_forward(self, lane, teacher, images, labels, fresh)
            losses.append(loss)
        t1 = self.clock.mark()
        total = losses[0] if len(losses) == 1 else torch.stack(losses).sum()  # disjoint parameters
        with nullcontext() if last else no_gradient_sync(self.trainer.strategy):  # one all-reduce per optimizer step
            self.manual_backward(total / self.cfg.accumulate_grad_batches)
        t2 = self.clock.mark()
        self.clock.add("student", t1, t2, also=lanes[0].seconds if len(lanes) == 1 else None)  # the joint backward
        if not last:  # accumulate the next micro-batch first
            return
        flags = {name: bool(ask()) for name, ask in self.step_flags.items()}  # asked once a step
        step, self.counted = self.global_step, False
        for lane, opt in zip(self.lane_list, self.optimizer_list()):
            if lane in lanes:
                with lane.random.active() if lane.random is not None else nullcontext():
                    _complete_step(self, lane, opt, step, images.shape[0], flags)
        if self.counted:
            self.steps_taken += 1
            self.batches_done_in_epoch = batch_idx + 1

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip here, inside the optimizer step: Lightning's mixed-precision plugin calls this
        hook after it unscaled fp16 gradients (clipping before `step()` would clip the scaled ones)."""
        if self.cfg.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.cfg.grad_clip, gradient_clip_algorithm="norm")

    def optimizer_list(self) -> list[LightningOptimizer]:
        """One optimizer per student, in lane order (`optimizers()` gives one alone, not a list)."""
        optimizers = self.optimizers()
        return cast(list[LightningOptimizer], optimizers if isinstance(optimizers, list) else [optimizers])

    def on_train_epoch_start(self) -> None:
        self.batches_done_in_epoch = 0

    def on_train_epoch_end(self) -> None:
        for lane in self.lane_list:
            if not lane.stopped and lane.method.after_epoch():
                _restart_schedule(lane, decided_at=self.global_step)

    def _mean_over_ranks(self, value: Tensor) -> Tensor:
        return self.trainer.strategy.reduce(value.to(self.device), reduce_op="mean")

    # ----- checkpoint state --------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.clock.settle()
        self.seconds["wall"] = self.wall_seconds()
        first = self.lane_list[0]
        assert first.scheduler is not None
        position = {"epoch": self.current_epoch, "batches_done": self.batches_done_in_epoch}
        checkpoint["leapkd"] = run_state(first.scheduler, self.seconds, position, self.device)
        if self.shared is not None:
            checkpoint["leapkd"]["lanes"] = [_lane_state(lane) for lane in self.lane_list]
            checkpoint["leapkd"]["teacher_passes"] = dict(self.shared.passes)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.restored = checkpoint["leapkd"]


def _lane_forward(
    module: DistillModule, lane: Lane, teacher: Backbone, images: Tensor, labels: Tensor, fresh: bool
) -> tuple[Tensor, bool]:
    """One student's phases of a micro-batch before the backward: the one-off pass of a fresh
    run, the teacher's targets and the student's loss; returns the loss and whether the
    micro-batch completes an optimizer step."""
    clock = module.clock
    lane.record = None  # stays None mid-accumulation and for a skipped step
    lane.first_batch_blocks = _first_batch(module, lane, teacher, images) if fresh else 0
    lane.block = lane.method.target_block
    t0 = clock.mark()
    targets = lane.method.targets(teacher, images)
    t1 = clock.mark()
    out = lane.method.loss(lane.student, images, targets, labels)
    lane.non_finite.observe(out.loss)
    last = lane.micro_batches.add(out, targets)
    t2 = clock.mark()
    clock.add("teacher", t0, t1, also=lane.seconds)
    clock.add("student", t1, t2, also=lane.seconds)
    return out.loss, last


def _complete_step(
    module: DistillModule,
    lane: Lane,
    optimizer: LightningOptimizer,
    step: int,
    batch_size: int,
    flags: dict[str, bool],
) -> None:
    """The optimizer step that closes one student's micro-batches of one step: the progress
    metric on them joined, the step's figures in one host transfer, a skip for a non-finite
    loss, the update, the curriculum's decision and the student's `StepRecord`."""
    method, clock = lane.method, module.clock
    since = clock.mark()
    out, targets = lane.micro_batches.joined()
    micro_batches = len(lane.micro_batches)
    lane.micro_batches.clear()
    metric = method.progress(out, targets)
    clock.add("metric", since, clock.mark(), also=lane.seconds)
    values = step_values(
        module.trainer.strategy,
        lane.non_finite.take_flag(),
        flags,
        out,
        metric,
        metric_per_rank=method.progress_per_rank,
    )
    clock.settle()
    if lane.non_finite.skip(values.bad, values.loss, values.parts, step):
        optimizer.zero_grad(set_to_none=True)
        return
    t3 = clock.mark()
    lr = _optimizer_step(module, lane, optimizer)
    clock.add("student", t3, clock.mark(), also=lane.seconds)  # read at the next step's transfer
    moved = method.after_step(values.metric)
    if moved:
        _restart_schedule(lane, decided_at=step)
    lane.last_trained_block = lane.block
    lane.record = StepRecord(
        step=step,
        epoch=module.current_epoch,
        target_block=lane.block,
        teacher_blocks_run=targets.depth,
        first_batch_teacher_blocks=lane.first_batch_blocks,
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


def _optimizer_step(module: DistillModule, lane: Lane, optimizer: LightningOptimizer) -> float:
    """Step the optimizer (clipping in `on_before_optimizer_step`) and the schedule, clear
    the gradients; returns the LR used. Lightning counts every optimizer's step as a global
    step: the first student to step counts the step, the others step through the strategy
    (precision plugin and clipping alike), uncounted."""
    lr = float(optimizer.param_groups[0]["lr"])
    if module.counted:
        module.trainer.strategy.optimizer_step(optimizer.optimizer, closure=lambda: None, model=module)
    else:
        optimizer.step()
        module.counted = True
    optimizer.zero_grad(set_to_none=True)
    assert lane.scheduler is not None
    lane.scheduler.step()
    return lr


def _restart_schedule(lane: Lane, decided_at: int) -> None:
    """After the target moved: restart the LR schedule if the method asks (the level-up was
    decided after `decided_at` optimizer steps)."""
    mode = lane.method.lr_restart
    if mode is not None and lane.scheduler is not None:
        lane.scheduler.restart(mode, decided_at)


def _first_batch(module: DistillModule, lane: Lane, teacher: Backbone, images: Tensor) -> int:
    """A fresh run's first batch: the method's one-off pass (LEAP's calibration), timed as
    teacher work; returns the teacher blocks it ran."""
    clock = module.clock
    start = clock.mark()
    with torch.no_grad():
        blocks = lane.method.on_first_batch(teacher, lane.student, images)
    clock.add("teacher", start, clock.mark(), also=lane.seconds)
    return blocks


def _start_lane_states(module: DistillModule) -> None:
    """Several students: each its own generators, starting where building it left the global
    ones (what a run of that student alone goes on from), or where the checkpoint left them."""
    saved = module.restored["lanes"] if module.restored is not None else None
    for i, lane in enumerate(module.lane_list):
        lane.random = LaneRandom(module.device, lane.random_start)
        if saved is not None:
            _restore_lane(lane, saved[i], module.device)
    if module.restored is not None and module.shared is not None:
        module.shared.passes.update({int(k): v for k, v in module.restored["teacher_passes"].items()})


def _lane_state(lane: Lane) -> dict[str, Any]:
    assert lane.scheduler is not None and lane.random is not None
    return {
        "scheduler": lane.scheduler.state_dict(),
        "random": lane.random.state_dict(),
        "stopped": lane.stopped,
        "seconds": dict(lane.seconds),
    }


def _restore_lane(lane: Lane, state: dict[str, Any], device: torch.device) -> None:
    assert lane.scheduler is not None and lane.random is not None
    total = lane.scheduler.total_steps
    lane.scheduler.load_state_dict(state["scheduler"])
    lane.scheduler.total_steps = total
    for group, lr in zip(lane.scheduler.optimizer.param_groups, lane.scheduler.get_lr()):
        group["lr"] = lr
    lane.random.load_state_dict(state["random"])
    lane.stopped = state["stopped"]
    lane.seconds.update(state["seconds"])


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
        loss = sum(
            (
                lane.method.loss(lane.student, images, lane.method.targets(module.teacher, images), labels).loss
                for lane in module.lane_list
            ),
            torch.zeros((), device=images.device),
        )
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return [n for (n, _), g in zip(named, grads) if g is None]
