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
class StudentCallbacks:
    """One student's callbacks, and those whose results its summary reads."""

    flops: FlopAccounting
    ema: StudentEma | None
    kept: StudentEma | None  # the EMA when it is the run's student (kept_weights ema)
    evaluation: EvaluateDuringTraining | None
    trackers: Trackers
    every: list[Callback]


@dataclass
class RunCallbacks:
    """A run's callbacks: each student's, then the run's own."""

    students: list[StudentCallbacks]
    stop: StopOnSignal
    teacher_head: TeacherHead | None
    every: list[Callback]

    @property
    def first(self) -> StudentCallbacks:
        """The first student's (the only one of a one-student run)."""
        return self.students[0]


@dataclass
class StudentSetup:
    """What one student's callbacks are built from: its configuration, method and directory."""

    cfg: DistillConfig
    method: Method
    run: RunDirectory


def run_callbacks(
    cfg: DistillConfig,
    students: list[StudentSetup],
    run: RunDirectory,
    num_levels: int,
    progress: bool,
    fit_head: TeacherHeadFitter | None = None,
    scorer: Scorer | None = None,
) -> RunCallbacks:
    """Teacher head (logit KD); each student's FLOPs, EMA, evaluation, metrics log and trackers,
    snapshots; signals, checkpoints, (debug) lock-step, progress bar; in the order their hooks
    must run. `scorer` scores the students during training (with `eval_every`)."""
    stop = StopOnSignal()
    head = TeacherHead(fit_head) if fit_head is not None else None
    lanes = [student_callbacks(s.cfg, s.method, s.run, scorer, lane) for lane, s in enumerate(students)]
    every: list[Callback] = [*([head] if head else []), *(c for lane in lanes for c in lane.every)]
    bests = [(c.evaluation, s.run.best_checkpoint) for c, s in zip(lanes, students) if c.evaluation is not None]
    every += [
        stop,
        CheckpointPolicy(run.last_checkpoint, cfg.checkpoint_every, stop, cfg.checkpoint_every_minutes, bests),
    ]
    if LockStepCheck.enabled():
        every.append(LockStepCheck(run.path / "ranks"))
    if progress:
        every.append(CurriculumProgressBar(num_levels, lanes[0].evaluation))
    return RunCallbacks(lanes, stop, head, every)


def student_callbacks(
    cfg: DistillConfig, method: Method, run: RunDirectory, scorer: Scorer | None, lane: int = 0
) -> StudentCallbacks:
    """FLOPs, EMA, evaluation, metrics log and trackers, snapshots of the student of `lane`."""
    flops = FlopAccounting(lane)
    ema = StudentEma(cfg.ema_decay, lane) if cfg.ema_decay is not None else None
    kept = ema if cfg.kept_weights == "ema" else None
    evaluation = _evaluation(cfg, run, scorer, kept, lane)
    figures = tuple(scorer.figures) if evaluation is not None and scorer is not None else ()
    columns = metric_columns(method.loss_terms(), method.log_values, figures)
    trackers = Trackers(cfg.logger, run, cfg.model_dump(), cfg.tracker_project, cfg.mlflow_tracking_uri)
    every: list[Callback] = [flops, *([ema] if ema else [])]
    every += [*([evaluation] if evaluation else []), MetricsLog(run.metrics, columns, trackers, lane)]
    if cfg.snapshot_every:
        every.append(Snapshots(cfg.snapshot_every, run.snapshot, kept, lane))
    return StudentCallbacks(flops, ema, kept, evaluation, trackers, every)


def _evaluation(
    cfg: DistillConfig, run: RunDirectory, scorer: Scorer | None, ema: StudentEma | None, lane: int
) -> EvaluateDuringTraining | None:
    schedule = cfg.eval_schedule()
    if schedule is None or scorer is None:
        return None
    every, unit = schedule
    return EvaluateDuringTraining(
        scorer,
        every,
        unit,
        cfg.eval_metric,
        run.student_best,
        cfg.early_stop_patience,
        cfg.early_stop_min_delta,
        ema,
        lane,
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
