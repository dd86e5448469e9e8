"""The Lightning trainer of a run, with leapkd's callbacks (we own logging and checkpoints)."""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
from lightning.pytorch.callbacks import Callback

from leapkd.config import DistillConfig
from leapkd.engine.callbacks import (
    AtomicCheckpointIO,
    CheckpointPolicy,
    CurriculumProgressBar,
    FlopAccounting,
    LockStepCheck,
    MetricsLog,
    Snapshots,
    StopOnSignal,
    StudentEma,
    TeacherHead,
    TeacherHeadFitter,
)
from leapkd.engine.callbacks.metrics_log import metric_columns
from leapkd.methods import Method
from leapkd.rundir import RunDirectory


@dataclass
class RunCallbacks:
    """A run's callbacks, and the two whose results its summary reads."""

    flops: FlopAccounting
    stop: StopOnSignal
    teacher_head: TeacherHead | None
    ema: StudentEma | None
    every: list[Callback]


def run_callbacks(
    cfg: DistillConfig,
    method: Method,
    run: RunDirectory,
    num_levels: int,
    progress: bool,
    fit_head: TeacherHeadFitter | None = None,
) -> RunCallbacks:
    """Teacher head (logit KD), FLOPs, metrics log, snapshots, signals, checkpoints,
    (debug) lock-step, progress bar; in the order their hooks must run."""
    flops, stop = FlopAccounting(), StopOnSignal()
    head = TeacherHead(fit_head) if fit_head is not None else None
    columns = metric_columns(method.loss_terms(), method.log_values)
    tensorboard = run.path / "tensorboard" if cfg.logger == "tensorboard" else None
    ema = StudentEma(cfg.ema_decay) if cfg.ema_decay is not None else None
    every: list[Callback] = [*([head] if head else []), flops, MetricsLog(run.metrics, columns, tensorboard)]
    if ema is not None:
        every.append(ema)
    if cfg.snapshot_every:
        every.append(Snapshots(cfg.snapshot_every, run.snapshot, ema))
    every += [stop, CheckpointPolicy(run.last_checkpoint, cfg.checkpoint_every, stop)]
    if LockStepCheck.enabled():
        every.append(LockStepCheck(run.path / "ranks"))
    if progress:
        every.append(CurriculumProgressBar(num_levels))
    return RunCallbacks(flops, stop, head, ema, every)


def build_trainer(
    cfg: DistillConfig,
    precision: str,
    callbacks: list[Callback],
    devices: int | str = 1,
    strategy: str = "auto",
    num_nodes: int = 1,
    accelerator: str = "auto",
    progress: bool = True,
) -> L.Trainer:
    """A Lightning trainer for one run: no Lightning logger, our checkpoint policy and IO."""
    return L.Trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision=precision,  # type: ignore[arg-type]
        max_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        logger=False,
        enable_checkpointing=True,  # the CheckpointPolicy callback
        enable_progress_bar=progress,
        enable_model_summary=False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        deterministic=False,
        log_every_n_steps=1,
    )
