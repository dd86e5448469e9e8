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
from dataclasses import dataclass
from typing import Any, cast

import lightning as L
import numpy as np
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import DataLoader

from leapkd.config import DistillConfig
from leapkd.data import LabeledImages, skipped_mask
from leapkd.data.sampling import seeded_loader
from leapkd.errors import LeapkdError
from leapkd.methods import LossOutput, Method, StudentOutput
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
    batch_size: int
    flops: int = 0  # training FLOPs so far, filled by the FLOP accounting callback


class DistillModule(L.LightningModule):
    """Student + method trained against a frozen teacher."""

    def __init__(
        self,
        cfg: DistillConfig,
        teacher: Backbone,
        student: Backbone,
        method: Method,
        train_set: LabeledImages,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        self.student = student
        self.method = method
        self.__dict__["teacher"] = teacher  # not a child module, on purpose
        self.train_set = train_set
        self.scheduler: WarmupCosine | None = None
        self.seconds = {"wall": 0.0, "teacher": 0.0, "student": 0.0, "metric": 0.0}
        self.started = False  # first batch done (fresh run) or state restored (resume)
        self.batches_done_in_epoch = 0
        self.restored: dict[str, Any] | None = None
        self.record: StepRecord | None = None  # the last step's record
        self.notes: list[str] = []  # one-off events for the rank trace
        self.skipped_batches = 0
        self.last_trained_block: int | None = None
        self._clock_start = 0.0
        self._wall_before = 0.0

    teacher: Backbone

    # ----- data and optimizer ---------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        position = self.restored["position"] if self.restored is not None else None
        cfg = self.cfg
        return seeded_loader(self.train_set, cfg.seed, cfg.batch_size, cfg.num_workers, self.global_rank,
                             self.trainer.world_size, position)  # fmt: skip

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = weight_decay_groups((self.student, self.method), self.cfg.weight_decay)
        # the fused kernel is one call per step instead of a Python loop over tensors (CPU and
        # GPU); Lightning's mixed-precision plugin refuses to clip gradients of fused optimizers
        fused = self.device.type in ("cpu", "cuda") and self.cfg.precision == "32"
        return torch.optim.AdamW(groups, lr=self.cfg.lr, fused=fused)

    # ----- lifecycle ------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self.teacher.to(self.device)
        self.method.reduce = self._mean_over_ranks

    def on_train_start(self) -> None:
        """After Lightning restored the loops and optimizer: the schedule and the run state."""
        opt = self._optimizer().optimizer
        total = int(self.trainer.estimated_stepping_batches)
        self.scheduler = WarmupCosine(opt, total, self.cfg.warmup_steps, self.cfg.min_lr_ratio)
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
        mask = skipped_mask(self.train_set)
        if mask is not None and self.trainer.world_size > 1:  # each rank read its own shard
            total = self.trainer.strategy.reduce(mask.to(self.device, torch.float32), reduce_op="sum")
            mask.copy_(total.cpu() > 0)

    def wall_seconds(self) -> float:
        """Training wall time so far, across resumes."""
        return self._wall_before + time.perf_counter() - self._clock_start

    # ----- one step -------------------------------------------------------------------
    def student_forward(self, images: Tensor) -> StudentOutput:
        """The student's last level (normalised) and the levels the method taps, in one pass,
        plus the patch projection when the method compares it."""
        s, last = self.student, self.student.num_levels
        taps = self.method.student_taps()
        raw = s.forward_levels(images, [*taps, last], norm=False)
        projection = s.patch_projection(images) if self.method.needs_patch_projection else None
        return StudentOutput(s.normalize(last, raw[last]), projection, {b: raw[b] for b in taps})

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        method, step = self.method, self.global_step
        self.record = None  # stays None for a skipped batch
        first_batch_blocks = 0
        if not self.started:
            self.started = True
            c0 = _now(self.device)
            with torch.no_grad():
                first_batch_blocks = method.on_first_batch(self.teacher, self.student_forward(images), images)
            self.seconds["teacher"] += _now(self.device) - c0
        block = method.target_block

        t0 = _now(self.device)
        targets = method.targets(self.teacher, images)
        t1 = _now(self.device)
        out = method.loss(self.student_forward(images), targets, labels)
        if self._skip_non_finite(out, step):
            return
        lr = self._optimizer_step(out.loss)
        t2 = _now(self.device)
        metric = method.progress(out, targets)
        t3 = _now(self.device)
        moved = method.after_step(metric)
        if moved:
            self._target_moved()
        for key, (a, b) in {"teacher": (t0, t1), "student": (t1, t2), "metric": (t2, t3)}.items():
            self.seconds[key] += b - a
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
        )
        shown = {"loss": self.record.loss, "block": float(method.target_block)}
        if metric is not None:
            shown["metric"] = metric
        self.log_dict(shown, prog_bar=True, on_step=True, batch_size=images.shape[0])

    def _skip_non_finite(self, out: LossOutput, step: int) -> bool:
        """Every rank takes the same decision on a non-finite loss (or a rank that skipped the
        collective would hang the others): stop with an error, or skip the batch everywhere."""
        if not self.trainer.strategy.reduce_boolean_decision(not bool(torch.isfinite(out.loss)), all=False):
            return False
        if self.cfg.nan_policy == "stop":
            raise _non_finite(out.loss, out.parts, step)
        self.skipped_batches += 1
        rank_zero_warn(
            f"non-finite loss at step {step} (on at least one rank): batch skipped on every rank "
            f"({self.skipped_batches} so far)"
        )
        return True

    def _optimizer_step(self, loss: Tensor) -> float:
        """Backward, clip, step the optimizer and the schedule; returns the LR used."""
        opt = self._optimizer()
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.cfg.grad_clip:
            self.clip_gradients(opt.optimizer, gradient_clip_val=self.cfg.grad_clip, gradient_clip_algorithm="norm")
        lr = float(opt.param_groups[0]["lr"])
        opt.step()
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


def weight_decay_groups(modules: tuple[nn.Module, ...], weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer groups: weight decay on weight matrices, none on norms, biases, tokens, pos_embed."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in modules:
        for name, p in module.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or "token" in name or "pos_embed" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def untrained_parameters(module: DistillModule, images: Tensor, labels: Tensor) -> list[str]:
    """Names of trainable parameters that one loss evaluation leaves without a gradient."""
    targets = module.method.targets(module.teacher, images)
    loss = module.method.loss(module.student_forward(images), targets, labels).loss
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return [n for (n, _), g in zip(named, grads) if g is None]


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _non_finite(loss: Tensor, parts: dict[str, Tensor], step: int) -> LeapkdError:
    bad = [k for k, v in parts.items() if not torch.isfinite(v)] or ["loss"]
    return LeapkdError(
        f"the loss is {loss.detach().item()} at step {step} (non-finite part: {', '.join(bad)}); "
        "the last good checkpoint is kept",
        "lower --lr, keep --grad_clip on, check the data for corrupt values, or pass --nan_policy skip",
    )


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
