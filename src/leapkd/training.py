"""`distill()`: one call from a configuration to a finished run directory.

It checks everything that can be checked before training (configuration, models, data,
hardware, the run directory), builds the method, the module and the trainer, trains, and
writes the summary, plots, student and report.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.fabric.utilities.rank_zero import _get_rank
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from leapkd.config import DistillConfig
from leapkd.data import Augmentation, LabeledImages, build_dataset, image_files, images_per_class, num_skipped
from leapkd.data.transforms import Output
from leapkd.engine import (
    DistillModule,
    Lane,
    RunCallbacks,
    StudentCallbacks,
    StudentSetup,
    build_trainer,
    run_callbacks,
    untrained_parameters,
)
from leapkd.engine.accumulation import global_batch
from leapkd.engine.callbacks import LockStepCheck, StopOnSignal, TeacherHeadFitter
from leapkd.engine.callbacks.ema import kept_head, kept_student
from leapkd.engine.tracker_check import check_trackers
from leapkd.errors import LeapkdError
from leapkd.eval.in_training import StudentScorer
from leapkd.feature_cache import extract_features
from leapkd.hardware import autocast_dtype, device_type, resolve_precision, resolve_workers
from leapkd.linear_classifier import fit_linear_head
from leapkd.methods import Method, build_method, load_config
from leapkd.models import (
    PRESETS,
    Backbone,
    check_image_size,
    check_teacher_has_weights,
    freeze,
    head_file_of,
    load_backbone,
    save_head_file,
    save_student_file,
)
from leapkd.plots import plot_curriculum, plot_evaluation, plot_loss
from leapkd.report import write_report
from leapkd.rundir import RunDirectory, read_metrics, resume_command, usable_checkpoint
from leapkd.shared_run import SharedRunSummary
from leapkd.shared_training import finish_students, prepare_student_runs, student_run
from leapkd.summary import (
    EvaluationSummary,
    HardwareSummary,
    RunSummary,
    SecondsSummary,
    StudentClassification,
    ThroughputSummary,
    TrackerStop,
)

# Keys that may change when a run is resumed (everything else must match the saved run).
RESUMABLE_CHANGES = {"epochs", "max_steps", "num_workers", "checkpoint_every", "checkpoint_every_minutes"}


@dataclass
class DistillResult:
    run_dir: Path
    summary: RunSummary | None  # a one-student run's; None on the ranks that do not write (DDP)
    shared: SharedRunSummary | None = None  # a run of several students: the run's own summary
    students: dict[str, RunSummary] = field(default_factory=dict)  # ... and each student's, by name


def resolve_config(
    config: DistillConfig | dict[str, Any] | str | Path | None, overrides: dict[str, Any]
) -> DistillConfig:
    if isinstance(config, DistillConfig):
        return load_config(None, {**config.model_dump(), **overrides})
    if isinstance(config, dict):
        return load_config(None, {**config, **overrides})
    return load_config(config, overrides)


def _resume_config(run: RunDirectory, requested: DistillConfig, overrides: dict[str, Any]) -> DistillConfig:
    """The saved configuration, with only the keys a resume may change taken from the request."""
    saved = load_config(run.config)
    changed = {k for k, v in overrides.items() if getattr(saved, k) != getattr(requested, k)}
    forbidden = sorted(changed - RESUMABLE_CHANGES - {"name", "output_dir"})
    if forbidden:
        raise LeapkdError(
            f"cannot change {', '.join(forbidden)} when resuming {run.path}",
            f"resume with the saved configuration (only {', '.join(sorted(RESUMABLE_CHANGES))} may change)",
        )
    return load_config(None, {**saved.model_dump(), **{k: overrides[k] for k in changed}})


def distill(
    config: DistillConfig | dict[str, Any] | str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    devices: int | str = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    accelerator: str = "auto",
    progress: bool = True,
    **overrides: Any,
) -> DistillResult:
    """Run a distillation and return its run directory and summary.

    `config` is a DistillConfig, a dict, a YAML path or None (the embedded default);
    keyword `overrides` set individual keys (`distill(method="fixed", epochs=2)`).
    Models, data and the output directory are checked before any training starts.
    """
    _quiet_lightning()
    cfg = resolve_config(config, overrides)
    run = RunDirectory(Path(cfg.output_dir) / cfg.run_name())
    if resume:
        if not run.config.is_file():
            raise LeapkdError(
                f"cannot resume: {run.path} holds no run (no config.yaml)",
                "drop `resume` to start a new run, or give the `name`/`output_dir` of the run to resume",
            )
        cfg = _resume_config(run, cfg, overrides)
    check_trackers(cfg.logger, cfg.mlflow_tracking_uri)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    precision, why = resolve_precision(cfg.precision, device_type(accelerator))
    if device_type(accelerator) == "cuda":
        torch.set_float32_matmul_precision(cfg.matmul_precision)
    teacher = _teacher(cfg, autocast_dtype(precision))
    index = run.data_index if resume else None
    train_set = training_images(cfg, teacher, augment=cfg.augment, index=index, output="uint8")
    lanes = _lanes(cfg, teacher, len(train_set.classes))
    module = DistillModule(cfg, teacher, lanes, train_set, precision)
    if devices != 1 or num_nodes > 1:
        strategy = _ddp_strategy(module, strategy)
    method = module.method  # every student's method is of one kind
    fit_head = _teacher_head_fitter(cfg, progress) if method.teacher_head is not None else None
    scorer = _scorer(cfg, teacher, classifier=method.student_classifier is not None)
    setups = [StudentSetup(lane.cfg, lane.method, student_run(run, lane, len(lanes))) for lane in lanes]
    callbacks = run_callbacks(cfg, setups, run, teacher.num_levels, progress, fit_head, scorer)
    trainer = _trainer(cfg, precision, callbacks, devices, strategy, num_nodes, accelerator, progress)
    module.num_workers = resolve_workers(cfg.num_workers, processes_per_node=trainer.num_devices)
    if scorer is not None:
        scorer.num_workers = module.num_workers
    _check_fits(run, train_set, global_batch(cfg, trainer.world_size), resume, trainer.world_size)
    first_rank = _get_rank() in (None, 0)  # DDP children re-run this function; only the first rank writes
    if first_rank:
        run.prepare(cfg.to_yaml(), resume=resume, overwrite=overwrite, world_size=trainer.world_size)
        if len(lanes) > 1:
            prepare_student_runs(setups, resume, trainer.world_size)
    try:
        if first_rank:
            files = image_files(train_set)
            if files is not None and not run.data_index.is_file():  # the exact list this run trains on
                files.save_index(run.data_index)
            if progress:
                print(f"precision {precision} ({why}); {module.num_workers} data worker(s)", flush=True)
        trainer.fit(module, ckpt_path=str(usable_checkpoint(run)) if resume else None)
        return _results(trainer, run, module, callbacks, setups, why, scorer)
    except BaseException as err:
        if first_rank:
            command = resume_command(run.path, devices, num_nodes, strategy, accelerator)
            raise _failed(run, module, fresh=not resume, err=err, resume=command) from None
        raise
    finally:
        run.release()


def _results(
    trainer: L.Trainer,
    run: RunDirectory,
    module: DistillModule,
    callbacks: RunCallbacks,
    setups: list[StudentSetup],
    why: str,
    scorer: StudentScorer | None,
) -> DistillResult:
    """After training, on rank 0: each student's summary and files, and with several students
    the run's own summary and report (`why`: the reason for the precision)."""
    hardware = HardwareSummary(
        precision=module.precision,
        precision_reason=why,
        teacher_dtype=str(next(module.teacher.parameters()).dtype).removeprefix("torch."),
        num_workers=module.num_workers,
    )
    with on_device(trainer.strategy.root_device, module, *_ema_students(callbacks)):  # score where it trained
        if callbacks.first.flops.ledger is None:  # resumed at its very end: Lightning ran no training hook
            _replay_training_hooks(trainer, module, callbacks.every)
        if not trainer.is_global_zero:
            return DistillResult(run.path, None)
        images = len(module.train_set)
        ends = [_finish(setup.run, i, module, callbacks, images, hardware, scorer) for i, setup in enumerate(setups)]
    if len(ends) == 1:
        return DistillResult(run.path, ends[0])
    shared = finish_students(run, module, callbacks, ends)
    return DistillResult(run.path, None, shared, {lane.name: end for lane, end in zip(module.lane_list, ends)})


def _replay_training_hooks(trainer: L.Trainer, module: DistillModule, every: list[Callback]) -> None:
    """A resumed run whose checkpoint is its last step (its end was cut short, e.g. by a full
    disk) has no step left, and Lightning then skips the training hooks: run them on the
    restored state, so the run's end (summary, plots, student, report) is written as usual."""
    callbacks = [c for c in every if not isinstance(c, StopOnSignal | LockStepCheck)]  # no signals, no rank trace
    for callback in callbacks:
        callback.on_train_start(trainer, module)
    module.on_train_start()
    for callback in callbacks:
        callback.on_train_end(trainer, module)
    module.on_train_end()
    for callback in callbacks:
        callback.on_fit_end(trainer, module)


def _check_fits(run: RunDirectory, train_set: LabeledImages, batch: int, resume: bool, world: int) -> None:
    if len(train_set) < batch:
        raise LeapkdError(
            f"{len(train_set)} training images do not fill one global batch of {batch}",
            "lower `batch_size` or use more data (`subset_per_class`)",
        )
    if resume:
        _check_same_world(run, world)


def _failed(run: RunDirectory, module: DistillModule, fresh: bool, err: BaseException, resume: str) -> BaseException:
    """After a failure: a new run that failed before its first step leaves no directory; a
    resume that did keeps its directory as it was; a run that trained is marked failed in
    summary.json (where the disk still lets it), and a disk error says how to continue
    (`resume`: the command that does)."""
    if module.steps_taken == 0:
        if fresh:
            run.abandon(remove=True)
        return err
    try:
        failed = {"status": "failed", "failed_after_step": module.global_step, "error": _error_text(err)}
        run.write_summary({**run.read_summary(), **failed})  # _finish drops these keys when it ends
    except (LeapkdError, OSError, ValueError):
        pass
    if isinstance(err, LeapkdError) and run.last_checkpoint.is_file():
        return LeapkdError(err.problem, f"{err.fix}; then continue from the last checkpoint: `{resume}`")
    return err


def _error_text(err: BaseException) -> str:
    return err.problem if isinstance(err, LeapkdError) else f"{type(err).__name__}: {err}"


def _scorer(cfg: DistillConfig, teacher: Backbone, classifier: bool) -> StudentScorer | None:
    """The student's scorer on fixed images of the labelled evaluation data (`eval_data`, else the
    training data), checked before the run starts: with `eval_every`, or to score the student's
    own head at the end (`classifier`)."""
    if cfg.eval_every is None and not classifier:
        return None
    data = _eval_images(cfg)["data"]
    per_class = None if cfg.eval_images_per_class == "all" else cfg.eval_images_per_class
    scorer = StudentScorer(
        data,
        cfg.image_size,
        teacher.mean,
        teacher.std,
        per_class,
        cfg.eval_protocols,
        seed=cfg.seed,
        data_root=cfg.data_root if data == cfg.data else None,
        batch_size=2 * cfg.batch_size,
        classifier=classifier,
        transform=cfg.eval_transform,
    )
    if cfg.eval_every is not None and cfg.eval_metric not in scorer.figures:
        head = cfg.eval_metric.startswith("student")
        raise LeapkdError(
            f"eval_metric {cfg.eval_metric} is not measured on {data} ({scorer.num_classes} classes: "
            f"{', '.join(scorer.figures)})" + ("; this run trains no student head" if head else ""),
            ("set `ce_weight` or `kd_weight` above 0 to train one, or " if head else "")
            + (f"choose `eval_metric` {scorer.figures[0]}" if scorer.figures else "add knn to `eval_protocols`"),
        )
    return scorer


def _teacher(cfg: DistillConfig, compute_dtype: torch.dtype | None) -> Backbone:
    """The frozen teacher (in the compute dtype when training in mixed precision: half its memory)."""
    check_teacher_has_weights(cfg.teacher, cfg.teacher_weights, cfg.teacher_pretrained, cfg.allow_random_teacher)
    teacher = freeze(
        load_backbone(
            cfg.teacher,
            cfg.image_size,
            cfg.teacher_weights,
            pretrained=cfg.teacher_pretrained and cfg.teacher_weights is None,  # a local file wins
            model_kwargs=cfg.teacher_kwargs,
        )
    )
    if compute_dtype is not None:
        teacher.to(compute_dtype)
    if cfg.compile:  # level by level, so early exit keeps its compiled levels
        for level in teacher.level_modules():
            level.compile()
    return teacher


def _lanes(cfg: DistillConfig, teacher: Backbone, num_classes: int) -> list[Lane]:
    """Each student with its method. Every student starts from the random state a run of its
    own would build it from, so its initial weights are the same in a run of several."""
    start = torch.get_rng_state()
    lanes = []
    for name, own in cfg.lane_configs():
        torch.set_rng_state(start)
        student = _student(own, teacher)
        lanes.append(Lane(name, own, student, build_method(own, teacher, student, num_classes=num_classes)))
        lanes[-1].random_start = torch.get_rng_state()  # where a run of this student alone goes on from
    return lanes


def _student(cfg: DistillConfig, teacher: Backbone) -> Backbone:
    """A student preset takes the teacher's patch size (same grid); any other student keeps its
    own architecture, and the aligner resamples its grid to the target's."""
    patch = teacher.patch_size if cfg.student in PRESETS else None
    student = load_backbone(
        cfg.student, cfg.image_size, cfg.student_weights, patch_size=patch, model_kwargs=cfg.student_kwargs
    )
    check_image_size(cfg.image_size, teacher=teacher, student=student)
    if cfg.compile:
        for level in student.level_modules():
            level.compile()
    return student


def _ddp_strategy(module: DistillModule, strategy: str) -> str:
    """DDP refuses trainable parameters that get no gradient unless told to look for them:
    probe one small step and ask for that only when the loss leaves some untouched."""
    if strategy not in ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook"):
        return strategy
    images, labels = _probe_batch(module)
    if not untrained_parameters(module, images, labels):
        return strategy
    return f"{'ddp' if strategy == 'auto' else strategy}_find_unused_parameters_true"


def _probe_batch(module: DistillModule) -> tuple[Tensor, Tensor]:
    items = [module.train_set[i] for i in range(min(2, len(module.train_set)))]
    return module.normalize(torch.stack([x for x, _ in items])), torch.tensor([int(y) for _, y in items])


def _trainer(
    cfg: DistillConfig,
    precision: str,
    callbacks: RunCallbacks,
    devices: int | str,
    strategy: str,
    num_nodes: int,
    accelerator: str,
    progress: bool,
) -> L.Trainer:
    """The Lightning trainer, or a LeapkdError when the hardware asked for is not here."""
    try:
        return build_trainer(
            cfg,
            precision,
            callbacks.every,
            devices=devices,
            strategy=strategy,
            num_nodes=num_nodes,
            accelerator=accelerator,
            progress=progress,
        )
    except (MisconfigurationException, ValueError, RuntimeError) as err:
        found = f"{torch.cuda.device_count()} CUDA device(s)"
        raise LeapkdError(
            f"cannot train with `accelerator` {accelerator} `devices` {devices} `strategy` {strategy}: {err} "
            f"(this machine has {found})",
            "choose what this machine has: `accelerator` cpu, or auto to use a GPU when there is one",
        ) from None


def _check_same_world(run: RunDirectory, world: int) -> None:
    """A resumed run must use as many processes as before: the data order, the batches and
    the curriculum's averaged metric depend on it, so another count would not continue exactly."""
    saved = run.read_launch().get("world_size")
    if saved is not None and saved != world:
        raise LeapkdError(
            f"{run.path} was trained by {saved} process(es) (devices x nodes) and is being resumed with {world}; "
            "the data order and batches depend on that number, so the run would not continue exactly",
            f"resume with {saved} process(es) in all, e.g. `devices` {saved} (or start a new run)",
        )


def training_images(
    cfg: DistillConfig, teacher: Backbone, augment: bool, index: Path | None = None, output: Output = "float"
) -> LabeledImages:
    """The run's training split, normalised with the teacher's mean and std (`output`
    "uint8": normalised later, on the device; `index`: the image list a run saved, read
    instead of scanning the files again)."""
    augmentation = Augmentation(
        crop_scale=cfg.aug_crop_scale,
        flip_p=cfg.aug_flip,
        jitter_p=cfg.aug_jitter,
        jitter=cfg.aug_jitter_strength,
        grayscale_p=cfg.aug_grayscale,
        blur_p=cfg.aug_blur,
        blur_sigma=cfg.aug_blur_sigma,
        randaugment=cfg.aug_randaugment,
        interpolation=cfg.aug_interpolation,
    )
    return build_dataset(
        cfg.data,
        split="train",
        image_size=cfg.image_size,
        augment=augment,
        mean=teacher.mean,
        std=teacher.std,
        subset_per_class=images_per_class(cfg.data, cfg.subset_per_class),
        seed=cfg.seed,
        root=cfg.data_root,
        index=index,
        augmentation=augmentation,
        output=output,
    )


def _teacher_head_fitter(cfg: DistillConfig, progress: bool) -> TeacherHeadFitter:
    """Logit KD with a headless teacher: a function fitting a linear head on its frozen CLS
    features of the un-augmented training images, on the teacher's device, in the given
    autocast dtype, fed by the run's data workers (one loader process would make the other
    ranks wait in their broadcast for as long as decoding the whole split takes). The
    features are cached (atomic writes), keyed by the precision too."""

    def fit(teacher: Backbone, dtype: torch.dtype | None, num_workers: int) -> nn.Linear:
        plain = training_images(cfg, teacher, augment=False)
        feats, labels = extract_features(
            teacher,
            plain,
            "cls",
            cache_key={**key, "mean": teacher.mean, "std": teacher.std},
            progress=progress,
            desc="teacher head",
            autocast_dtype=dtype,
            num_workers=num_workers,
        )
        device = next(teacher.parameters()).device
        return fit_linear_head(feats.to(device), labels.to(device), len(plain.classes), seed=cfg.seed)

    key = {
        "data": cfg.data,
        "split": "train",
        "per_class": images_per_class(cfg.data, cfg.subset_per_class),
        "seed": cfg.seed,
        "size": cfg.image_size,
        "root": cfg.data_root,
    }
    return fit


def _quiet_lightning() -> None:
    """Keep Lightning's banners and tips out of the user's terminal (warnings still show)."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    # mid-epoch resume is exact: EpochSeededSampler skips the batches already trained on
    warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")


def _finish(
    run: RunDirectory,
    index: int,
    module: DistillModule,
    run_callbacks: RunCallbacks,
    train_images: int,
    hardware: HardwareSummary,
    scorer: StudentScorer | None = None,
) -> RunSummary:
    """Write the summary.json, plots, student (and its head, scored on the validation images)
    and report of the student of lane `index` into `run`; return the summary."""
    lane, callbacks = module.lane_list[index], run_callbacks.students[index]
    cfg, method = lane.cfg, lane.method
    assert callbacks.flops.ledger is not None
    run_part = {
        "method": cfg.method,
        "status": "interrupted" if run_callbacks.stop.stopped else "completed",
        "teacher": module.teacher.describe(),
        "student": lane.student.describe(),
        "data": cfg.data,
        "train_images": train_images,
        "steps": module.global_step,
        "epochs": module.current_epoch,  # completed epochs
        "batch_size": cfg.batch_size,
        "global_batch": module.global_batch,
        "peak_lr": lane.lr,
    }
    seconds = {f"{part}_seconds": value for part, value in {"wall": module.seconds["wall"], **lane.seconds}.items()}
    head_fit = run_callbacks.teacher_head
    seconds["teacher_head_seconds"] = head_fit.seconds if head_fit else 0.0
    targets = {
        "final_block": lane.last_trained_block or method.target_block,  # the last block trained on
        "pending_block": method.target_block,  # the next step's target (after a last level-up)
        "skipped_batches": lane.non_finite.skipped_batches,
        "skipped_images": num_skipped(module.train_set),
        "loss_terms": method.loss_terms(),
    }
    summary = RunSummary.assemble(
        run.read_summary(),  # keeps what other commands (eval) merged in
        run_part,
        SecondsSummary.model_validate(seconds),
        callbacks.flops.ledger.summary(),
        _throughput(module, callbacks),
        targets,
        hardware,
        method.summary(),
        {"evaluation": _evaluation_summary(cfg, callbacks, module.seconds["wall"])},
    )
    student, head = kept_student(lane, callbacks.kept), kept_head(lane, callbacks.kept)
    classes = list(module.train_set.classes)
    if head is not None and scorer is not None:  # the student's own classifier: saved and scored
        save_head_file(head, head_file_of(run.student), classes)
        scores = _head_scores(scorer, student, head, module, callbacks)
        summary.student_classification = StudentClassification.model_validate({**scores, **_eval_images(cfg)})
    run.write_summary(summary.record())
    _plots(run, method, module.teacher.num_levels, summary)
    save_student_file(student, run.student)
    if callbacks.ema is not None and callbacks.kept is None:  # the average, saved beside the live student
        save_student_file(callbacks.ema.student, run.student_ema)
        if callbacks.ema.head is not None:
            save_head_file(callbacks.ema.head, head_file_of(run.student_ema), classes)
    write_report(run.path)
    callbacks.trackers.finish(summary, module.global_step)
    if callbacks.trackers.stopped:  # which tracker stopped, when and why (training went on without it)
        summary.trackers_stopped = [TrackerStop(**stop) for stop in callbacks.trackers.stopped]
        run.write_summary(summary.record())
    return summary


def _ema_students(callbacks: RunCallbacks) -> list[nn.Module]:
    return [c.ema.ema.module for c in callbacks.students if c.ema is not None and c.ema.ema is not None]


@contextmanager
def on_device(device: torch.device, *modules: nn.Module) -> Iterator[None]:
    """The modules on `device` (where training left them before Lightning's teardown moved
    the module to the CPU) for the end of the run, then on the CPU."""
    for module in modules:
        module.to(device)
    try:
        yield
    finally:
        for module in modules:
            module.cpu()


def _eval_images(cfg: DistillConfig) -> dict[str, Any]:
    """Which images the student is scored on: the labelled evaluation data and how many per class."""
    return {
        "data": cfg.eval_data or cfg.data,
        "images_per_class": cfg.eval_images_per_class,
        "transform": cfg.eval_transform,
    }


def _head_scores(
    scorer: StudentScorer, student: Backbone, head: nn.Module, module: DistillModule, callbacks: StudentCallbacks
) -> dict[str, float]:
    """The student head's top-1 / top-5 on the validation images: the last evaluation's when it
    scored this very student (after the last step), else measured now."""
    latest = callbacks.evaluation.latest if callbacks.evaluation is not None else None
    if latest is not None and latest["step"] == module.global_step and "student_top1" in latest:
        return {k.removeprefix("student_"): v for k, v in latest.items() if k.startswith("student_")}
    return scorer.classify(student, head, autocast_dtype(module.precision))


def _evaluation_summary(cfg: DistillConfig, callbacks: StudentCallbacks, wall: float) -> EvaluationSummary | None:
    """The evaluations during training (None without eval_every): history, best, cost, early stop."""
    evaluation = callbacks.evaluation
    if evaluation is None:
        return None
    share = evaluation.seconds / wall if wall > 0 else None
    return EvaluationSummary(**_eval_images(cfg), **evaluation.summary(), share_of_wall=share)


def _throughput(module: DistillModule, callbacks: StudentCallbacks) -> ThroughputSummary:
    """FLOPs per device and for the whole job, images per second, peak accelerator memory."""
    ledger = callbacks.flops.ledger
    assert ledger is not None
    per_device = ledger.teacher_flops + ledger.student_flops
    wall = module.seconds["wall"]
    return ThroughputSummary(
        flops_per_device=per_device,
        job_flops=callbacks.flops.job_total,  # summed over the ranks
        images_per_second=module.global_step * module.global_batch / wall if wall > 0 else None,
        peak_memory_bytes=module.peak_memory_bytes,  # read while training was on the device
    )


def _plots(run: RunDirectory, method: Method, num_levels: int, summary: RunSummary) -> None:
    rows = read_metrics(run.metrics)
    if rows:
        plot_curriculum(rows, num_levels, run.plots / "curriculum.png", summary.threshold, summary.level_ups)
        plot_loss(rows, run.plots / "loss.png", [f"loss_{t}" for t in method.loss_terms()])
    evaluation = summary.evaluation
    if evaluation and evaluation.history:
        plot_evaluation(evaluation.history, evaluation.metric, rows, summary.level_ups, run.plots / "evaluation.png")
