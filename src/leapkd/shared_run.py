"""The summary of a run of several students (`students`): one teacher pass per batch served
every student. Each student's own summary.json (in `<run>/students/<name>/`) is what a run of
its own writes; this one, the run's summary.json, compares them and splits the cost: the
teacher counted once, each student's own part, and what separate runs would have cost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict

from leapkd.edge import EdgeRow
from leapkd.errors import LeapkdError
from leapkd.rundir import RunDirectory
from leapkd.summary import RunSummary

SHARED_VERSION = 1
QUALITY_FIGURES = ("knn_top1", "linear_top1", "student_top1")


class StudentResult(BaseModel):
    """One student of the run: what it is, what it cost alone and how good it is."""

    model_config = ConfigDict(extra="allow")

    name: str
    directory: str  # relative to the run directory
    model: str
    params: int
    status: str
    final_block: int | None = None
    flops_alone: int  # teacher + student FLOPs a run of this student alone takes (its summary's)
    student_flops: int  # its own share of this run
    flops_saving: float  # against the fixed-target run of the same steps (LEAP's early exit)
    student_seconds: float  # its forward passes, metric and optimizer steps (the joint backward is the run's)
    quality: dict[str, float] = {}  # the last evaluation's figures and the own head's top-1


class SharedRunSummary(BaseModel):
    """The run's comparison of its students and its cost against separate runs."""

    model_config = ConfigDict(extra="allow")

    version: int = SHARED_VERSION
    kind: Literal["several students"] = "several students"
    method: str
    teacher: dict[str, Any]
    data: str
    status: str
    steps: int
    wall_seconds: float
    teacher_seconds: float  # the shared teacher passes (and calibration), once
    teacher_flops: int  # the shared teacher passes, counted once
    teacher_passes: dict[int, int]  # depth -> passes run to it (micro-batches of this rank)
    students: list[StudentResult]
    edge: list[EdgeRow] = []  # size, cost, CPU latency and quality of each student (`export --latency`)

    @property
    def student_flops(self) -> int:
        return sum(s.student_flops for s in self.students)

    @property
    def flops(self) -> int:
        """This run's training FLOPs: the teacher once, every student's own."""
        return self.teacher_flops + self.student_flops

    @property
    def separate_flops(self) -> int:
        """What one run per student would have cost."""
        return sum(s.flops_alone for s in self.students)

    @property
    def saving(self) -> float:
        """1 - this run's FLOPs / separate runs' FLOPs."""
        return 1.0 - self.flops / self.separate_flops if self.separate_flops else 0.0

    @classmethod
    def student_result(cls, name: str, directory: str, s: RunSummary) -> StudentResult:
        """A student's row from its own summary."""
        last = s.evaluation.last if s.evaluation is not None else None
        quality = {k: float(v) for k, v in (last or {}).items() if k in QUALITY_FIGURES}
        if s.student_classification is not None and s.student_classification.top1 is not None:
            quality["student_top1"] = s.student_classification.top1
        return StudentResult(
            name=name,
            directory=directory,
            model=s.student.name,
            params=s.student.params,
            status=s.status or "completed",
            final_block=s.final_block,
            flops_alone=s.teacher_flops + s.student_flops,
            student_flops=s.student_flops,
            flops_saving=s.flops_saving,
            student_seconds=s.student_seconds + s.metric_seconds,
            quality=quality,
        )

    def edge_quality(self) -> str | None:
        """The quality figure the edge table's Pareto front is drawn for (the first any student has)."""
        return next((f for f in QUALITY_FIGURES if any(f in row.quality for row in self.students)), None)

    def record(self) -> dict[str, Any]:
        """The JSON summary.json holds (with the derived totals, for readers of the file)."""
        out = self.model_dump(mode="json")
        out |= {"student_flops": self.student_flops, "flops": self.flops, "separate_flops": self.separate_flops}
        out["saving_vs_separate"] = self.saving
        return out


def is_shared_run(run: RunDirectory) -> bool:
    """Whether `run` is a run of several students (its configuration lists them)."""
    return bool(student_names(run))


def load_shared_summary(run: RunDirectory) -> SharedRunSummary:
    """The run's summary of its students, or an error that says what to do."""
    try:
        data = json.loads(run.summary.read_text())
    except (OSError, ValueError) as err:
        raise LeapkdError(f"cannot read {run.summary}: {err}", "run `leapkd distill` again for this run") from None
    for derived in ("student_flops", "flops", "separate_flops", "saving_vs_separate"):
        data.pop(derived, None)
    return SharedRunSummary.model_validate(data)


def students_table(s: SharedRunSummary) -> tuple[list[str], list[list[str]]]:
    """One row per student: what it is, what it cost and how good it is."""
    figures = [f for f in QUALITY_FIGURES if any(f in row.quality for row in s.students)]
    header = ["student", "model", "params (M)", "final block", "FLOPs alone (T)", "own FLOPs (T)", *figures]
    rows = [
        [
            row.name,
            row.model,
            f"{row.params / 1e6:.2f}",
            str(row.final_block or "-"),
            f"{row.flops_alone / 1e12:.3f}",
            f"{row.student_flops / 1e12:.3f}",
            *(f"{row.quality[f]:.4f}" if f in row.quality else "-" for f in figures),
        ]
        for row in s.students
    ]
    return header, rows


def shared_cost_rows(s: SharedRunSummary) -> list[tuple[str, str]]:
    """The run's cost, the teacher counted once, against one run per student."""
    return [
        ("students", str(len(s.students))),
        ("teacher FLOPs (shared, once)", f"{s.teacher_flops / 1e12:.3f} T"),
        ("students' own FLOPs", f"{s.student_flops / 1e12:.3f} T"),
        ("this run's FLOPs", f"{s.flops / 1e12:.3f} T"),
        ("separate runs' FLOPs", f"{s.separate_flops / 1e12:.3f} T"),
        ("saving against separate runs", f"{100 * s.saving:.1f}%"),
        ("wall seconds (teacher)", f"{s.wall_seconds:.1f} ({s.teacher_seconds:.1f})"),
        ("status", f"{s.status} after {s.steps} steps"),
    ]


def student_names(run: RunDirectory) -> list[str]:
    """The students of a run of several, in the run's order, from its configuration (so a run
    that stopped before its end has them too); empty for any other directory."""
    try:
        config = yaml.safe_load(run.config.read_text()) if run.config.is_file() else None
    except (OSError, yaml.YAMLError):
        return []
    entries = config.get("students") if isinstance(config, dict) else None
    if not entries:
        return []
    return [e.get("name") or Path(e["student"]).name for e in entries]


def student_source(source: str | Path, student: str | None, command: str) -> Path:
    """The directory of the student `student` of the run `source` (a run of several students),
    or `source` itself for a one-student run or another source; a run of several needs a name."""
    run = RunDirectory(source)
    names = student_names(run)
    if student is None:
        if names:
            raise LeapkdError(
                f"{run.path} holds several students ({', '.join(names)}); {command} takes one",
                f"name it with `student` {names[0]} (or give {run.path / 'students' / names[0]})",
            )
        return Path(source)
    if not names:
        raise LeapkdError(
            f"`student` {student} names a student of a run of several, and {source} is not one",
            "drop `student`",
        )
    if student not in names:
        raise LeapkdError(f"{run.path} has no student {student}", f"choose one of {', '.join(names)} for `student`")
    return run.path / "students" / student
