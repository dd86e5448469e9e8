"""The LightningModule: one training step in a fixed order, and nothing else.

Order of a step: teacher targets -> student loss -> backward/step -> progress metric ->
curriculum (the method's `after_step`). The teacher is held outside the module's children:
it is never in the optimizer, in a checkpoint or in DDP's synchronised parameters.
Optimisation is manual so each part can be timed. Logging, FLOP accounting, snapshots,
the rank lock-step check, signals and checkpoints are callbacks (`leapkd.engine.callbacks`)
that read the step's `StepRecord`. The module never names a concrete method.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, cast

import lightning as L
import numpy as np
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor
from torch.utils.data import DataLoader

from leapkd.config import DistillConfig
from leapkd.data import LabeledImages, skipped_mask
from leapkd.data.batch_augment import BatchAugment
from leapkd.data.sampling import seeded_loader
from leapkd.data.transforms import normalize
from leapkd.engine.accumulation import MicroBatches, global_batch, optimizer_steps, warmup_steps
from leapkd.engine.non_finite import NonFiniteLosses
from leapkd.engine.optimizers import build_optimizer, scaled_lr
from leapkd.hardware import autocast_dtype
from leapkd.methods import Method, StudentOutput
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
        self.started = False  # first batch done (fresh run) or state restored (resume)
        self.batches_done_in_epoch = 0
        self.restored: dict[str, Any] | None = None
        self.record: StepRecord | None = None  # the last step's record
        self.notes: list[str] = []  # one-off events for the rank trace
        self.non_finite = NonFiniteLosses(cfg.nan_policy)
        self.last_trained_block: int | None = None
        self.micro_batches = MicroBatches(cfg.accumulate_grad_batches)
        self.batch_augment = BatchAugment(cfg.mixup, cfg.aug_erasing)
        self._clock_start = 0.0
        self._wall_before = 0.0

    teacher: Backbone

    # ----- data and optimizer ---------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        position = self.restored["position"] if self.restored is not None else None
        cfg = self.cfg
        return seeded_loader(self.train_set, cfg.seed, cfg.batch_size, self.num_workers, self.global_rank,
                             self.trainer.world_size, position, pin_memory=self.device.type == "cuda",
                             accumulate=cfg.accumulate_grad_batches, repeats=cfg.repeated_augmentation,
                             python_rngs=cfg.aug_randaugment is not None)  # fmt: skip

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

    def on_train_start(self) -> None:
        """After Lightning restored the loops and optimizer: the schedule and the run state."""
        opt = self._optimizer().optimizer
        total = optimizer_steps(self.trainer, self.cfg.accumulate_grad_batches)
        self.scheduler = WarmupCosine(opt, total, warmup_steps(self.trainer, self.cfg), self.cfg.min_lr_ratio)
        if self.restored is not None:
            self.scheduler.load_state_dict(self.restored["scheduler"])
            self.scheduler.total_steps = total  # a resume may extend the run: the cosine spans the new length
            for group, lr in zip(opt.param_groups, self.scheduler.get_lr()):
                group["lr"] = lr
            self.seconds = dict(self.restored["seconds"])
            _set_rng_state(self.restored["rng"])
            self.started = True
        self._clock_start = time.perf_counter()
        self._wall_before = self.seconds["wall"]

    def on_fit_end(self) -> None:
        self.seconds["wall"] = self.wall_seconds()
        _merge_skipped_images(self)

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 images from the loader -> float32 normalised with the teacher's statistics."""
        return normalize(images, self.teacher.mean, self.teacher.std)

    def wall_seconds(self) -> float:
        """Training wall time so far, across resumes."""
        return self._wall_before + time.perf_counter() - self._clock_start

    # ----- one step -------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = self.normalize(batch[0]), batch[1]
        images = self.batch_augment(images)  # mixup, random erasing (calibration included)
        method, step = self.method, self.global_step
        self.record = None  # stays None for a skipped batch
        first_batch_blocks = 0
        if not self.started:
            self.started = True
            c0 = _now(self.device)
            with torch.no_grad():
                first_batch_blocks = method.on_first_batch(
                    self.teacher, student_forward(self.student, method, images), images
                )
            self.seconds["teacher"] += _now(self.device) - c0
        block = method.target_block

        t0 = _now(self.device)
        targets = method.targets(self.teacher, images)
        t1 = _now(self.device)
        out = method.loss(student_forward(self.student, method, images), targets, labels)
        if self.non_finite.skip(self.trainer.strategy, out, step):
            self.micro_batches.clear()
            self._optimizer().zero_grad(set_to_none=True)
            return
        self.manual_backward(out.loss / self.cfg.accumulate_grad_batches)
        self.seconds["teacher"] += t1 - t0
        if not self.micro_batches.add(out, targets):  # accumulate the next micro-batch first
            self.seconds["student"] += _now(self.device) - t1
            return
        out, targets = self.micro_batches.joined()
        lr = self._optimizer_step()
        t2 = _now(self.device)
        metric = method.progress(out, targets)
        t3 = _now(self.device)
        moved = method.after_step(metric)
        if moved:
            self._target_moved()
        self.seconds["student"] += t2 - t1
        self.seconds["metric"] += t3 - t2
        self.batches_done_in_epoch = batch_idx + 1
        self.last_trained_block = block
        self.record = StepRecord(
            step=step,
            epoch=self.current_epoch,
            target_block=block,
            teacher_blocks_run=targets.depth,
            first_batch_teacher_blocks=first_batch_blocks,
            metric=metric,
            loss=float(out.loss.detach()),
            parts={k: float(v) for k, v in out.parts.items()},
            lr=lr,
            level_up=moved,
            method_values=method.log_row(),
            batch_size=images.shape[0],
            micro_batches=len(self.micro_batches),
        )
        self.micro_batches.clear()
        shown = {"loss": self.record.loss, "block": float(method.target_block)}
        if metric is not None:
            shown["metric"] = metric
        self.log_dict(shown, prog_bar=True, logger=False, on_step=True, batch_size=images.shape[0])

    def _optimizer_step(self) -> float:
        """Clip the accumulated gradients, step the optimizer and the schedule, clear the
        gradients; returns the LR used."""
        opt = self._optimizer()
        if self.cfg.grad_clip:
            self.clip_gradients(opt.optimizer, gradient_clip_val=self.cfg.grad_clip, gradient_clip_algorithm="norm")
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
            self._target_moved()

    def _target_moved(self) -> None:
        mode = self.method.lr_restart()
        if mode is not None and self.scheduler is not None:
            self.scheduler.restart(mode, self.scheduler.last_epoch)

    def _mean_over_ranks(self, value: Tensor) -> Tensor:
        return self.trainer.strategy.reduce(value.to(self.device), reduce_op="mean")

    # ----- checkpoint state --------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.seconds["wall"] = self.wall_seconds()
        assert self.scheduler is not None
        checkpoint["leapkd"] = {
            "scheduler": self.scheduler.state_dict(),
            "seconds": dict(self.seconds),
            "rng": _get_rng_state(),
            "position": {"epoch": self.current_epoch, "batches_done": self.batches_done_in_epoch},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.restored = checkpoint["leapkd"]


def student_forward(student: Backbone, method: Method, images: Tensor) -> StudentOutput:
    """The student's last level (normalised) and the levels the method taps, in one pass,
    plus the patch projection when the method compares it."""
    last, taps = student.num_levels, method.student_taps()
    raw = student.forward_levels(images, [*taps, last], norm=False)
    projection = student.patch_projection(images) if method.needs_patch_projection else None
    return StudentOutput(student.normalize(last, raw[last]), projection, {b: raw[b] for b in taps})


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
        loss = module.method.loss(student_forward(module.student, module.method, images), targets, labels).loss
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return [n for (n, _), g in zip(named, grads) if g is None]


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _get_rng_state() -> dict[str, Any]:
    """Global RNG states in types a `weights_only` load accepts."""
    state = np.random.get_state(legacy=True)  # the default; numpy's stub types a bare call as a dict
    assert isinstance(state, tuple)  # the global generator is MT19937, whose legacy state is a tuple
    kind, keys, pos, has_gauss, gauss = state
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
