"""Lightning wiring: the training module, checkpoints, signals and the progress bar.

The teacher is held outside the module's children: it is never in the optimizer, in a
checkpoint or in DDP's synchronised parameters. Optimisation is manual so the engine can
time the teacher and student parts, step the schedule, and feed the curriculum in a fixed
order: teacher targets -> student loss -> backward/step -> metric -> curriculum.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from leapkd.accounting import FlopsLedger, student_step_flops, teacher_flops_by_depth
from leapkd.config import DistillConfig
from leapkd.data import skipped_mask
from leapkd.data.sampling import EpochSeededSampler, SeededItems
from leapkd.errors import LeapkdError
from leapkd.methods import FeatureDistillation, Leap, StudentOutput
from leapkd.models import Backbone, save_student_file
from leapkd.rundir import MetricsWriter, RunDirectory
from leapkd.schedule import WarmupCosine

DEBUG_RANKS_ENV = "LEAPKD_DEBUG_RANKS"  # "1": check and trace every rank's decisions each step


class DistillModule(L.LightningModule):
    """Student + method (projector, curriculum) trained against a frozen teacher."""

    def __init__(
        self,
        cfg: DistillConfig,
        teacher: Backbone,
        student: Backbone,
        method: FeatureDistillation,
        train_set: Dataset,
        run: RunDirectory,
        fit_head: Callable[[Backbone, torch.dtype | None], nn.Linear] | None = None,
    ) -> None:
        super().__init__()
        self.fit_head = fit_head  # builds the teacher head logit KD needs (see _fit_teacher_head)
        self.automatic_optimization = False
        self.cfg = cfg
        self.student = student
        self.method = method
        self.__dict__["teacher"] = teacher  # not a child module, on purpose
        self.train_set = train_set
        self.run = run
        self.scheduler: WarmupCosine | None = None
        self.ledger: FlopsLedger | None = None
        self.seconds = {"wall": 0.0, "teacher": 0.0, "student": 0.0, "metric": 0.0}
        self.started = False  # calibration done (fresh run) or state restored (resume)
        self.batches_done_in_epoch = 0
        self._restored: dict[str, Any] | None = None
        self._writer: MetricsWriter | None = None
        self._fit_start = 0.0
        self._wall_before = 0.0
        self._rank_trace: TextIO | None = None
        self._tensorboard: Any = None
        self.signals = StopOnSignal(self)
        self.stop_requested = False  # this process received a signal
        self.stopped = False  # every rank agreed to stop early
        self.skipped_batches = 0
        self.last_trained_block: int | None = None  # the target block of the last step taken
        self.teacher_head_seconds = 0.0

    teacher: Backbone

    # ----- data and optimizer ---------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        sampler = EpochSeededSampler(
            len(self.train_set),  # type: ignore[arg-type]
            seed=self.cfg.seed,
            batch_size=self.cfg.batch_size,
            rank=self.global_rank,
            world_size=self.trainer.world_size,
        )
        if self._restored is not None:
            pos = self._restored["position"]
            sampler.resume_at(pos["epoch"], pos["batches_done"])
        return DataLoader(
            SeededItems(self.train_set, self.cfg.seed),
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for module in (self.student, self.method):
            for name, p in module.named_parameters():
                if p.requires_grad:
                    (no_decay if p.ndim < 2 or "token" in name or "pos_embed" in name else decay).append(p)
        groups = [{"params": decay, "weight_decay": self.cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        # the fused kernel is one call per step instead of a Python loop over tensors (CPU and
        # GPU); Lightning's mixed-precision plugin refuses to clip gradients of fused optimizers
        fused = self.device.type in ("cpu", "cuda") and self.cfg.precision == "32"
        return torch.optim.AdamW(groups, lr=self.cfg.lr, fused=fused)

    # ----- lifecycle ------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self.teacher.to(self.device)
        self.method.reduce = self._mean_over_ranks
        if self.method.needs_teacher_head and self._restored is None:  # a resume restores the head
            start = time.perf_counter()
            self._fit_teacher_head()
            self.teacher_head_seconds = time.perf_counter() - start

    def _fit_teacher_head(self) -> None:
        """Logit KD with a headless teacher: rank 0 fits a linear head on the teacher's features
        (training device, the run's precision); the other ranks wait and receive it."""
        state = None
        if self.trainer.is_global_zero:
            state = {k: v.cpu() for k, v in self.fit_head(self.teacher, self.precision_dtype()).state_dict().items()}
            self._trace_note("teacher head fitted on this rank")
        state = self.trainer.strategy.broadcast(state, src=0)
        if not self.trainer.is_global_zero:
            self._trace_note("teacher head received from rank 0")
        self.method.set_teacher_head(state)

    def precision_dtype(self) -> torch.dtype | None:
        """The autocast dtype of the run's precision (None: full precision)."""
        return torch.bfloat16 if self.cfg.precision == "bf16-mixed" else None

    def on_train_start(self) -> None:
        """After Lightning restored the loops and optimizer: schedule, FLOP table, run state."""
        opt = self.optimizers().optimizer  # type: ignore[union-attr]
        self.scheduler = WarmupCosine(
            opt, int(self.trainer.estimated_stepping_batches), self.cfg.warmup_steps, self.cfg.min_lr_ratio
        )
        sample = self._sample_batch()
        self.ledger = FlopsLedger(
            teacher_by_depth=teacher_flops_by_depth(self.teacher, sample),
            student_step=self._count_student_step(sample),
        )
        resume_step = None
        if self._restored is not None:
            state = self._restored
            self.scheduler.load_state_dict(state["scheduler"])
            # a resume may extend the run (more epochs): the cosine spans the new length
            self.scheduler.total_steps = int(self.trainer.estimated_stepping_batches)
            for group, lr in zip(opt.param_groups, self.scheduler.get_lr()):
                group["lr"] = lr
            self.ledger.load_state_dict(state["ledger"])
            self.seconds = dict(state["seconds"])
            _set_rng_state(state["rng"])
            self.started = True
            resume_step = self.global_step
        if self.trainer.is_global_zero:
            self._writer = MetricsWriter(self.run.metrics, resume_step)
            if self.cfg.logger == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter

                self._tensorboard = SummaryWriter(str(self.run.path / "tensorboard"), purge_step=resume_step)
        self.signals.install()  # after Lightning's own SIGTERM handler, which it replaces
        self._fit_start = time.perf_counter()
        self._wall_before = self.seconds["wall"]
        if self.cfg.snapshot_every and resume_step is None:
            self.save_snapshot()  # step 0: the student before training

    def on_fit_end(self) -> None:
        self._update_wall()
        mask = skipped_mask(self.train_set)
        if mask is not None and self.trainer.world_size > 1:  # each rank read its own shard
            total = self.trainer.strategy.reduce(mask.to(self.device, torch.float32), reduce_op="sum")
            mask.copy_(total.cpu() > 0)
        if self._writer is not None:
            self._writer.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._rank_trace is not None:
            digest = hashlib.sha1()
            for name, tensor in sorted(self.student.state_dict().items()):
                digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
            self._rank_trace.write(f"# student sha1 {digest.hexdigest()}\n")
            self._rank_trace.close()

    def teardown(self, stage: str) -> None:
        self.signals.restore()

    # ----- debug: every rank must take the same decisions --------------------------------
    def setup(self, stage: str) -> None:
        if os.environ.get(DEBUG_RANKS_ENV) == "1":
            ranks = self.run.path / "ranks"
            ranks.mkdir(exist_ok=True)
            self._rank_trace = (ranks / f"rank{self.global_rank}.csv").open("w")
            self._rank_trace.write("step,target_block,next_block,metric\n")

    def _check_lockstep(self, step: int, block: int, metric: float | None) -> None:
        """Debug mode: gather (block, next block, metric) from all ranks and require equality."""
        assert self._rank_trace is not None
        mine = torch.tensor([block, self.method.target_block, metric or 0.0], dtype=torch.float64, device=self.device)
        every = self.all_gather(mine).reshape(-1, 3)
        if not torch.equal(every, every[:1].expand_as(every)):
            raise RuntimeError(f"ranks diverged at step {step}: (block, next block, metric) = {every.tolist()}")
        self._rank_trace.write(f"{step},{block},{self.method.target_block},{metric}\n")

    def _trace_note(self, text: str) -> None:
        if self._rank_trace is not None:
            self._rank_trace.write(f"# {text}\n")

    def _wall_now(self) -> float:
        return self._wall_before + time.perf_counter() - self._fit_start

    def _update_wall(self) -> None:
        self.seconds["wall"] = self._wall_now()

    # ----- one step -------------------------------------------------------------------
    def student_forward(self, images: Tensor) -> StudentOutput:
        """The student's final normed tokens, plus the patch projection and blocks the losses need."""
        s = self.student
        embed = s.embed(images)
        x, done, taps = embed, 0, {}
        for b in self.method.student_blocks():
            x, done = s.run_blocks(x, done, b), b
            taps[b] = x
        tokens = s.norm(s.run_blocks(x, done, s.num_blocks))
        projection = s.patch_projection(images) if self.method.needs_student_embed else None
        return StudentOutput(tokens, projection, s.num_prefix_tokens, taps)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images = batch[0]
        method, teacher, cfg = self.method, self.teacher, self.cfg
        step = self.global_step
        extra_teacher_flops = 0
        if not self.started:
            c0 = _now(self.device)
            extra_teacher_flops = self._start(images)
            self.seconds["teacher"] += _now(self.device) - c0
        block = method.target_block

        t0 = _now(self.device)
        targets = method.targets(teacher, images)
        t1 = _now(self.device)
        out = method.loss(self.student_forward(images), targets, batch[1])
        # every rank takes the same decision, or a rank that skipped the collective would hang the others
        if self.trainer.strategy.reduce_boolean_decision(not bool(torch.isfinite(out.loss)), all=False):
            if cfg.nan_policy == "stop":
                raise _non_finite(out.loss, out.parts, step)
            self.skipped_batches += 1
            rank_zero_warn(
                f"non-finite loss at step {step} (on at least one rank): batch skipped on every rank "
                f"({self.skipped_batches} so far)"
            )
            return
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)  # type: ignore[union-attr]
        self.manual_backward(out.loss)
        if cfg.grad_clip:
            self.clip_gradients(opt, gradient_clip_val=cfg.grad_clip, gradient_clip_algorithm="norm")
        lr = opt.param_groups[0]["lr"]  # type: ignore[union-attr]
        opt.step()
        assert self.scheduler is not None and self.ledger is not None
        self.scheduler.step()
        t2 = _now(self.device)
        metric = method.progress(out.projected, targets.patch)
        t3 = _now(self.device)
        moved = method.after_step(metric) if metric is not None else False
        if self._rank_trace is not None:
            self._check_lockstep(step, block, metric)
        if moved:
            self._level_up()

        self.seconds["teacher"] += t1 - t0
        self.seconds["student"] += t2 - t1
        self.seconds["metric"] += t3 - t2
        self.ledger.add_step(targets.depth, extra_teacher_flops)
        self.batches_done_in_epoch = batch_idx + 1
        self.last_trained_block = block
        row = {
            "step": step,
            "epoch": self.current_epoch,
            "target_block": block,
            "teacher_blocks_run": targets.depth,
            "metric": metric,
            "ema": method.curriculum.last_ema if isinstance(method, Leap) else None,
            "loss": float(out.loss.detach()),
            **{k: float(v) for k, v in out.parts.items()},
            "lr": lr,
            "level_up": int(moved),
            "flops": self.ledger.teacher_flops + self.ledger.student_flops,
            "wall_seconds": self._wall_now(),
        }
        if self._writer is not None:
            self._writer.write(row)
        if self._tensorboard is not None:  # the same scalars as metrics.csv
            for key, value in row.items():
                if key != "step" and value is not None:
                    self._tensorboard.add_scalar(key, value, step)
        self.log_dict(
            {
                "loss": row["loss"],
                "block": float(method.target_block),
                **({"metric": metric} if metric is not None else {}),
            },
            prog_bar=True,
            on_step=True,
            batch_size=images.shape[0],
        )

    def on_train_batch_end(self, *args: Any) -> None:
        if self.cfg.snapshot_every and self.global_step % self.cfg.snapshot_every == 0:
            self.save_snapshot()
        # a signal may reach one rank only (SLURM preemption, a user's kill): all stop together
        self.stopped = self.trainer.strategy.reduce_boolean_decision(self.stop_requested, all=False)
        every = self.cfg.checkpoint_every
        if self.stopped or (every and self.global_step % every == 0):
            self.save_checkpoint()
        if self.stopped:
            self.trainer.should_stop = True

    def on_train_epoch_start(self) -> None:
        self.batches_done_in_epoch = 0

    def on_train_epoch_end(self) -> None:
        if self.method.after_epoch():
            self._level_up()
        if not self.stopped:
            self.save_checkpoint()

    def _start(self, images: Tensor) -> int:
        """First batch of a fresh run: LEAP calibration before the first update.

        Returns the teacher FLOPs it spent (one pass through all blocks, or 0).
        """
        self.started = True
        if not (isinstance(self.method, Leap) and self.method.calibrate):
            return 0
        with torch.no_grad():
            self.method.start(self.teacher, self.student_forward(images), images)
        assert self.ledger is not None
        return self.ledger.teacher_by_depth[-1]

    def _level_up(self) -> None:
        if self.cfg.lr_reset != "none" and self.scheduler is not None:
            self.scheduler.restart(self.cfg.lr_reset, self.scheduler.last_epoch)

    def _mean_over_ranks(self, value: Tensor) -> Tensor:
        return self.trainer.strategy.reduce(value.to(self.device), reduce_op="mean")

    # ----- FLOPs measured once per shape -------------------------------------------------
    def _sample_batch(self) -> Tensor:
        items = [self.train_set[i][0] for i in range(min(self.cfg.batch_size, len(self.train_set)))]  # type: ignore[arg-type]
        return torch.stack(items).to(self.device)

    def _count_student_step(self, images: Tensor) -> int:
        with torch.no_grad():
            targets = self.method.targets(self.teacher, images)
        labels = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)

        def step() -> Tensor:
            return self.method.loss(self.student_forward(images), targets, labels).loss

        return student_step_flops(step)

    # ----- checkpoints and snapshots ---------------------------------------------------
    def save_snapshot(self) -> None:
        """Rank 0 writes the student now, with the step, training FLOPs and wall seconds so far."""
        if not self.trainer.is_global_zero:
            return
        assert self.ledger is not None
        self.run.snapshots.mkdir(exist_ok=True)
        save_student_file(
            self.student,
            self.run.snapshot(self.global_step),
            step=self.global_step,
            flops=self.ledger.teacher_flops + self.ledger.student_flops,
            wall_seconds=self._wall_now(),
        )

    def save_checkpoint(self) -> None:
        self.trainer.save_checkpoint(self.run.last_checkpoint)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._update_wall()
        assert self.scheduler is not None and self.ledger is not None
        checkpoint["leapkd"] = {
            "scheduler": self.scheduler.state_dict(),
            "ledger": self.ledger.state_dict(),
            "seconds": dict(self.seconds),
            "rng": _get_rng_state(),
            "position": {"epoch": self.current_epoch, "batches_done": self.batches_done_in_epoch},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._restored = checkpoint["leapkd"]


# ----- helpers ------------------------------------------------------------------------


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
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file, fsync, keep the previous checkpoint as `*.prev`, rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.replace(path, path.with_name(path.name + ".prev"))
        os.replace(tmp, path)


class CurriculumProgressBar(TQDMProgressBar):
    """The progress bar shows the current target block as b/L."""

    def __init__(self, num_blocks: int) -> None:
        super().__init__()
        self.num_blocks = num_blocks

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        if "block" in items:
            items["block"] = f"{int(float(items['block']))}/{self.num_blocks}"
        for key in ("loss", "metric"):
            if key in items:
                items[key] = f"{float(items[key]):.4f}"
        return items


class StopOnSignal:
    """SIGINT/SIGTERM ask the module to checkpoint and stop at the next step boundary.

    Installed when training starts, over Lightning's own SIGTERM handler (which would
    broadcast from inside the handler and hang when the signal reaches one rank only); the
    step boundary combines the request of every rank. A second Ctrl-C interrupts at once.
    """

    def __init__(self, module: DistillModule) -> None:
        self.module = module
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.module.stop_requested:
            raise KeyboardInterrupt
        self.module.stop_requested = True
        print(
            f"\n{signal.Signals(signum).name}: saving a checkpoint after this step, then stopping "
            "(press Ctrl-C again to abort at once)",
            flush=True,
        )

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                old = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                continue
            self._old.setdefault(sig, old)

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def build_trainer(
    cfg: DistillConfig,
    num_blocks: int,
    devices: int | str = 1,
    strategy: str = "auto",
    num_nodes: int = 1,
    accelerator: str = "auto",
    progress: bool = True,
) -> L.Trainer:
    """A Lightning trainer for one run (no Lightning logger or checkpoint callback: we own both)."""
    callbacks = [CurriculumProgressBar(num_blocks)] if progress else []
    return L.Trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision=cfg.precision,
        max_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        deterministic=False,
        log_every_n_steps=1,
    )
