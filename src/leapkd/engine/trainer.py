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
    EvaluateDuringTraining,
    FlopAccounting,
    LockStepCheck,
    MetricsLog,
    Scorer,
    Snapshots,
    StopOnSignal,
    StudentEma,
    TeacherHead,
    TeacherHeadFitter,
)
from leapkd.engine.callbacks.metrics_log import metric_columns
from leapkd.engine.trackers import Trackers
from leapkd.methods import Method
from leapkd.rundir import RunDirectory


@dataclass
class RunCallbacks:
    """A run's callbacks, and those whose results its summary reads."""

    flops: FlopAccounting
    stop: StopOnSignal
    teacher_head: TeacherHead | None
    ema: StudentEma | None
    kept: StudentEma | None  # the EMA when it is the run's student (kept_weights ema)
    evaluation: EvaluateDuringTraining | None
    trackers: Trackers
    every: list[Callback]


def run_callbacks(
    cfg: DistillConfig,
    method: Method,
    run: RunDirectory,
    num_levels: int,
    progress: bool,
    fit_head: TeacherHeadFitter | None = None,
    scorer: Scorer | None = None,
) -> RunCallbacks:
    """Teacher head (logit KD), FLOPs, EMA, evaluation, metrics log and trackers, snapshots,
    signals, checkpoints, (debug) lock-step, progress bar; in the order their hooks must run.
    `scorer` scores the student during training (with `eval_every`)."""
    flops, stop = FlopAccounting(), StopOnSignal()
    head = TeacherHead(fit_head) if fit_head is not None else None
    ema = StudentEma(cfg.ema_decay) if cfg.ema_decay is not None else None
    kept = ema if cfg.kept_weights == "ema" else None
    evaluation = _evaluation(cfg, run, scorer, kept)
    figures = tuple(scorer.figures) if evaluation is not None and scorer is not None else ()
    columns = metric_columns(method.loss_terms(), method.log_values, figures)
    trackers = Trackers(cfg.logger, run, cfg.model_dump(), cfg.tracker_project, cfg.mlflow_tracking_uri)
    every: list[Callback] = [*([head] if head else []), flops, *([ema] if ema else [])]
    every += [*([evaluation] if evaluation else []), MetricsLog(run.metrics, columns, trackers)]
    if cfg.snapshot_every:
        every.append(Snapshots(cfg.snapshot_every, run.snapshot, kept))
    every += [
        stop,
        CheckpointPolicy(
            run.last_checkpoint,
            cfg.checkpoint_every,
            stop,
            cfg.checkpoint_every_minutes,
            run.best_checkpoint,
            evaluation,
        ),
    ]
    if LockStepCheck.enabled():
        every.append(LockStepCheck(run.path / "ranks"))
    if progress:
        every.append(CurriculumProgressBar(num_levels, evaluation))
    return RunCallbacks(flops, stop, head, ema, kept, evaluation, trackers, every)


def _evaluation(
    cfg: DistillConfig, run: RunDirectory, scorer: Scorer | None, ema: StudentEma | None
) -> EvaluateDuringTraining | None:
    schedule = cfg.eval_schedule()
    if schedule is None or scorer is None:
        return None
    every, unit = schedule
    return EvaluateDuringTraining(
        scorer, every, unit, cfg.eval_metric, run.student_best, cfg.early_stop_patience, cfg.early_stop_min_delta, ema
    )


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
