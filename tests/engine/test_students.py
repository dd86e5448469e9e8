"""Several students in one run, one teacher pass per batch: each student ends exactly as it
would alone (the shared pass changes the cost, never the result), with its own directory,
and the run's summary splits the cost; resume is exact; bad student lists write nothing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from leapkd import distill
from leapkd.errors import LeapkdError
from leapkd.rundir import RunDirectory
from leapkd.shared_run import load_shared_summary

COST_COLUMNS = ("wall_seconds",)  # the only metrics.csv column a shared pass may change


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in COST_COLUMNS} for row in csv.DictReader(f)]


def _settings(tiny: dict, method: str) -> dict:
    settings = {**tiny, "method": method, "epochs": 2}
    settings.pop("student")
    return settings


@pytest.mark.parametrize("method", ["fixed", "leap"])
def test_each_student_of_a_shared_run_is_the_student_trained_alone(tiny, method):
    """A ViT with drop path (it draws random numbers in its step) and a CNN (batch-norm
    statistics), bit for bit: weights and every metrics.csv column but the wall clock."""
    settings = _settings(tiny, method)
    vit = {"student": "vit-nano", "student_kwargs": {"drop_path_rate": 0.1}}
    shared = distill(name="shared", students=[vit, "resnet18"], **settings)
    for alone_keys, name in ((vit, "vit-nano"), ({"student": "resnet18"}, "resnet18")):
        alone = distill(name=f"alone-{name}", **alone_keys, **settings)
        lane = shared.run_dir / "students" / name
        assert (lane / "student.safetensors").read_bytes() == (alone.run_dir / "student.safetensors").read_bytes()
        assert _rows(lane) == _rows(alone.run_dir)
        mine = shared.students[name]
        assert mine.final_block == alone.summary.final_block
        assert mine.teacher_flops == alone.summary.teacher_flops  # what it would cost alone
    assert shared.summary is None and shared.shared is not None


def test_the_run_counts_the_teacher_once_and_keeps_a_directory_per_student(tiny):
    r = distill(name="pair", students="vit-nano,resnet18", **_settings(tiny, "fixed"))
    s = r.shared
    assert s is not None and [row.name for row in s.students] == ["vit-nano", "resnet18"]
    assert s.teacher_passes == {6: 10}  # 10 batches, one pass each to the last block
    alone_teacher = [r.students[n].teacher_flops for n in ("vit-nano", "resnet18")]
    assert alone_teacher[0] == alone_teacher[1] == s.teacher_flops  # fixed: the same teacher work
    assert s.flops == s.teacher_flops + sum(r.students[n].student_flops for n in ("vit-nano", "resnet18"))
    assert s.separate_flops == sum(r.students[n].teacher_flops + r.students[n].student_flops for n in r.students)
    assert s.saving == pytest.approx(1 - s.flops / s.separate_flops) and s.saving > 0
    for name in ("vit-nano", "resnet18"):
        lane = r.run_dir / "students" / name
        for file in ("config.yaml", "metrics.csv", "summary.json", "student.safetensors", "report.html"):
            assert (lane / file).is_file(), file
        assert json.loads((lane / "summary.json").read_text())["student"]["name"] == name
    assert load_shared_summary(RunDirectory(r.run_dir)).record() == s.record()
    report = (r.run_dir / "report.md").read_text()
    assert "| vit-nano |" in report and "separate runs' FLOPs" in report


def test_a_shared_run_resumes_exactly(tiny, monkeypatch, interrupt_at):
    settings = {**_settings(tiny, "leap"), "threshold": 0.6}
    full = distill(name="full", students="vit-nano,resnet18", **settings)
    with monkeypatch.context() as m:
        interrupt_at(m, 3)
        part = distill(name="part", students="vit-nano,resnet18", **settings)
    assert part.shared is not None and part.shared.status == "interrupted" and part.shared.steps == 4
    resumed = distill(name="part", students="vit-nano,resnet18", resume=True, **settings)
    assert resumed.shared is not None and resumed.shared.teacher_passes == full.shared.teacher_passes
    for name in ("vit-nano", "resnet18"):
        a, b = full.run_dir / "students" / name, resumed.run_dir / "students" / name
        assert (a / "student.safetensors").read_bytes() == (b / "student.safetensors").read_bytes()
        assert [row["loss"] for row in _rows(a)] == [row["loss"] for row in _rows(b)]


@pytest.mark.parametrize(
    ("students", "problem"),
    [
        ("vit-nano,vit-nano", "listed twice"),
        ("vit-nano,no_such_model_xyz", "no_such_model_xyz"),
        ("vit-nano,vit_small_patch14_dinov2", "14"),  # 64 px is no whole number of 14 px patches
    ],
)
def test_a_bad_student_list_is_refused_before_anything_is_written(tiny, students, problem):
    with pytest.raises(LeapkdError, match=problem) as err:
        distill(name="bad", students=students, **_settings(tiny, "fixed"))
    assert err.value.fix
    assert not (Path(tiny["output_dir"]) / "bad").exists()


def test_eval_and_export_take_a_student_of_the_run(tiny, capsys):
    from leapkd.cli import main

    settings = {**_settings(tiny, "fixed"), "epochs": 1, "eval_every": 5}
    r = distill(name="edge", students="vit-nano,resnet18", **settings)
    run = str(r.run_dir)
    assert main(["eval", run, "--protocols", "knn"]) != 0
    assert "holds several students (vit-nano, resnet18)" in capsys.readouterr().err
    assert main(["eval", run, "--student", "nope"]) != 0
    assert "choose one of vit-nano, resnet18 for --student" in capsys.readouterr().err
    assert 0 == main(
        ["eval", run, "--student", "resnet18", "--protocols", "knn", "--train_per_class", "4", "--val_per_class", "2"]
    )
    assert (r.run_dir / "students" / "resnet18" / "eval.json").is_file()
    assert main(["export", run, "--format", "onnx", "--latency"]) == 0  # every student, and the edge table
    out = capsys.readouterr().out
    assert "vit-nano onnx:" in out and "resnet18 onnx:" in out and "Pareto (knn_top1)" in out
    shared = load_shared_summary(RunDirectory(r.run_dir))
    assert [row.name for row in shared.edge] == ["vit-nano", "resnet18"]
    for row in shared.edge:
        assert row.flops_per_image and row.latency and row.latency[0].threads == 1 and "knn_top1" in row.quality
    assert (r.run_dir / "plots" / "edge.png").is_file() and "Edge table" in (r.run_dir / "report.md").read_text()
    assert main(["export", run, "--student", "vit-nano"]) == 0  # one student, safetensors
    assert (r.run_dir / "students" / "vit-nano" / "export" / "student.safetensors").is_file()
