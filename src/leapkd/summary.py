"""The run summary (summary.json): one typed, versioned record of a finished or stopped run.

Each component contributes its own part (the FLOPs ledger `FlopsSummary`, the method
`MethodSummary`, evaluation during training `EvaluationSummary`, the hardware choices
`HardwareSummary`, ...); `RunSummary` is their union, written flat (one key per figure)
so that files written before the version existed read unchanged. Keys another command
merged in (`leapkd eval`'s `eval`) and keys of newer versions are kept as they are.
"""

from __future__ import annotations

from typing import Any, Literal, overload

from pydantic import BaseModel, ConfigDict, ValidationError

from leapkd.curriculum import LevelUp
from leapkd.errors import LeapkdError
from leapkd.rundir import RunDirectory

SUMMARY_VERSION = 2  # 1: the unversioned files written before the typed summary (same keys)

Status = Literal["completed", "interrupted", "failed"]


class _Part(BaseModel):
    """A part of the summary; unknown keys are kept (older or newer files)."""

    model_config = ConfigDict(extra="allow")


class ModelFacts(_Part):
    """A backbone's static facts (`Backbone.describe()`)."""

    name: str
    family: str = "vit"
    levels: int | None = None
    blocks: int  # the name earlier summaries used for levels
    embed_dim: int | None = None
    patch_size: int | None = None
    image_size: int | None = None
    grid: list[int] | None = None
    prefix_tokens: int | None = None
    level_widths: list[int] | None = None
    build: dict[str, Any] | None = None
    params: int


class MethodSummary(_Part):
    """What the method records: where the target started and when it moved (LEAP), how it was
    calibrated, the teacher classifier it used (logit KD)."""

    start_block: int | None = None
    level_ups: list[int] = []
    level_up_events: list[LevelUp] = []
    calibration_scores: list[float] | None = None
    threshold: float | None = None
    teacher_classifier: str | None = None


class FlopsSummary(_Part):
    """The FLOPs ledger's totals for this device and what the fixed-target run would have cost."""

    teacher_flops: int
    student_flops: int
    baseline_flops: int
    flops_saving: float


class SecondsSummary(_Part):
    """Wall-clock seconds of the run and of its timed parts."""

    wall_seconds: float
    teacher_seconds: float = 0.0
    student_seconds: float = 0.0
    metric_seconds: float = 0.0
    teacher_head_seconds: float = 0.0


class ThroughputSummary(_Part):
    flops_per_device: int | None = None
    job_flops: int | None = None  # summed over the ranks
    images_per_second: float | None = None
    peak_memory_bytes: int | None = None


class HardwareSummary(_Part):
    """The precision and data workers the run chose, and why."""

    precision: str | None = None
    precision_reason: str | None = None
    teacher_dtype: str | None = None
    num_workers: int | None = None


class EvaluatedImages(_Part):
    """Which images a student was scored on."""

    data: str
    images_per_class: int | str | None = None
    transform: str = "resize"


class EarlyStop(_Part):
    step: int
    reason: str


class EvaluationSummary(EvaluatedImages):
    """Evaluation during training (`eval_every`): its history, best, last, cost and early stop."""

    every: str
    metric: str
    best: dict[str, Any] | None = None  # {"step": s, metric: value}
    last: dict[str, Any] | None = None
    seconds: float = 0.0
    early_stop: EarlyStop | None = None
    history: list[dict[str, Any]] = []
    share_of_wall: float | None = None


class StudentClassification(EvaluatedImages):
    """The student's own head scored on the validation images."""

    top1: float
    top5: float | None = None


class TrackerStop(_Part):
    tracker: str
    step: int
    error: str


class RunSummary(MethodSummary, FlopsSummary, SecondsSummary, ThroughputSummary, HardwareSummary):
    """summary.json of a run that reached its end (completed, stopped, or failed after its summary)."""

    version: int = 1
    method: str
    status: Status
    teacher: ModelFacts
    student: ModelFacts
    data: str
    train_images: int | None = None
    steps: int
    epochs: int | None = None
    batch_size: int | None = None
    global_batch: int | None = None
    peak_lr: float | None = None
    final_block: int
    pending_block: int | None = None
    skipped_batches: int = 0
    skipped_images: int = 0
    loss_terms: list[str] = []
    evaluation: EvaluationSummary | None = None
    student_classification: StudentClassification | None = None
    eval: dict[str, dict[str, Any]] = {}  # merged in by `leapkd eval`: data name -> protocol -> result
    trackers_stopped: list[TrackerStop] | None = None
    failed_after_step: int | None = None  # a later session of the run failed
    error: str | None = None

    @classmethod
    def assemble(cls, earlier: dict[str, Any], *parts: BaseModel | dict[str, Any]) -> RunSummary:
        """The summary from the components' parts, keeping what other commands merged into the
        earlier file (and dropping an earlier failure's keys: this session got to its end)."""
        kept = {k: v for k, v in earlier.items() if k not in ("failed_after_step", "error", "version")}
        fields: dict[str, Any] = {"version": SUMMARY_VERSION}
        for part in parts:
            fields.update(part.model_dump(exclude_unset=True) if isinstance(part, BaseModel) else part)
        return cls.model_validate({**kept, **fields})

    def record(self) -> dict[str, Any]:
        """The JSON form written to summary.json (only the keys that were set, as before the version)."""
        return self.model_dump(mode="json", exclude_unset=True)


@overload
def load_summary(run: RunDirectory, missing_ok: Literal[False] = False) -> RunSummary: ...
@overload
def load_summary(run: RunDirectory, missing_ok: bool) -> RunSummary | None: ...
def load_summary(run: RunDirectory, missing_ok: bool = False) -> RunSummary | None:
    """The run's summary.json as a `RunSummary`, or a LeapkdError naming what is missing or wrong
    (with `missing_ok`, None when the run wrote no figures yet)."""
    record = run.read_summary()
    if missing_ok and "method" not in record:
        return None
    if not record:
        raise LeapkdError(f"{run.path} has no summary.json", "pass a finished (or stopped) run directory")
    if "method" not in record:  # a run that failed before it wrote its figures
        raise LeapkdError(
            f"{run.path} failed after step {record.get('failed_after_step', '?')} "
            f"({record.get('error', 'no error recorded')}) before it wrote its figures",
            "continue it with `leapkd distill --resume` (the summary is written when it ends)",
        )
    try:
        return RunSummary.model_validate(record)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise LeapkdError(
            f"{run.summary} is not a summary leapkd can read ({where}: {first['msg']})",
            "pass a run directory leapkd wrote, or continue the run with `leapkd distill --resume` to rewrite it",
        ) from None
