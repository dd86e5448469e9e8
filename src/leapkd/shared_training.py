"""The run-level part of a run of several students: their directories, and the run's own
summary and report once every student's are written (`training.distill` trains them)."""

from __future__ import annotations

import json
from typing import Any

from leapkd.deploy import export
from leapkd.disk import write_text_atomic
from leapkd.edge import EdgeRow, Latency
from leapkd.engine import DistillModule, Lane, RunCallbacks, StudentSetup
from leapkd.plots import plot_edge
from leapkd.report import write_shared_report
from leapkd.rundir import RunDirectory
from leapkd.shared_run import SharedRunSummary, StudentResult, load_shared_summary
from leapkd.summary import RunSummary

STUDENTS_DIR = "students"


def student_run(run: RunDirectory, lane: Lane, lanes: int) -> RunDirectory:
    """Where a student's files go: the run directory itself in a one-student run, else
    `<run>/students/<name>/`."""
    return run if lanes == 1 else RunDirectory(run.path / STUDENTS_DIR / lane.name)


def prepare_student_runs(setups: list[StudentSetup], resume: bool, world_size: int) -> None:
    """Each student's directory, with the configuration a run of its own would have, so `eval`,
    `export` and `report` read it as a run."""
    for setup in setups:
        setup.run.checkpoints.mkdir(parents=True, exist_ok=True)
        setup.run.plots.mkdir(exist_ok=True)
        if not resume:
            write_text_atomic(setup.run.config, setup.cfg.to_yaml())
            write_text_atomic(setup.run.launch, json.dumps({"world_size": world_size}) + "\n")


def finish_students(
    run: RunDirectory, module: DistillModule, callbacks: RunCallbacks, ends: list[RunSummary]
) -> SharedRunSummary:
    """The run's summary.json and report: its students side by side and its cost, the teacher
    counted once, against separate runs."""
    assert module.shared is not None
    ledger = callbacks.first.flops.ledger
    assert ledger is not None
    passes = dict(sorted(module.shared.passes.items()))
    first = ends[0]
    summary = SharedRunSummary(
        method=first.method,
        teacher=first.teacher.model_dump(),
        data=first.data or "",
        status=first.status or "completed",
        steps=first.steps or 0,
        wall_seconds=module.seconds["wall"],
        teacher_seconds=module.seconds["teacher"],
        teacher_flops=sum(ledger.teacher_by_depth[depth - 1] * count for depth, count in passes.items()),
        teacher_passes=passes,
        students=[
            SharedRunSummary.student_result(lane.name, f"{STUDENTS_DIR}/{lane.name}", end)
            for lane, end in zip(module.lane_list, ends)
        ],
    )
    run.write_summary(summary.record())
    write_shared_report(run, summary)
    return summary


def export_students(run: RunDirectory, formats: list[str], **options: Any) -> dict[str, list[dict[str, Any]]]:
    """Every student of a run of several in each format (each into its own directory's export);
    with `latency` (onnx), the edge table in the run's summary.json and report, and its plot."""
    summary = load_shared_summary(run)
    results: dict[str, list[dict[str, Any]]] = {}
    for row in summary.students:
        results[row.name] = [export(run.path / row.directory, fmt, **options) for fmt in formats]
    if options.get("latency"):
        summary.edge = [_edge_row(row, results[row.name]) for row in summary.students]
        run.write_summary(summary.record())
        figure = summary.edge_quality()
        if figure is not None:
            plot_edge(summary.edge, figure, run.plots / "edge.png")
        write_shared_report(run, summary)
    return results


def _edge_row(row: StudentResult, exports: list[dict[str, Any]]) -> EdgeRow:
    onnx = next(r for r in exports if r["format"] == "onnx")
    latency = [Latency.model_validate(m) for m in onnx["latency"]]
    return EdgeRow(
        name=row.name, params=row.params, flops_per_image=onnx["flops_per_image"], latency=latency, quality=row.quality
    )
