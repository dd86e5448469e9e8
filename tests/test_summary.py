"""The typed run summary: older files read, merged keys kept, one set of headline rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leapkd.errors import LeapkdError
from leapkd.headline import headline_rows
from leapkd.rundir import RunDirectory
from leapkd.summary import SUMMARY_VERSION, FlopsSummary, MethodSummary, RunSummary, load_summary

FACTS = {"name": "vit-nano", "family": "vit", "levels": 6, "blocks": 6, "image_size": 64, "params": 1290624}

# a summary.json as leapkd wrote it before the version existed (keys of 2026-11)
VERSION_1 = {
    "method": "leap",
    "status": "completed",
    "teacher": FACTS,
    "student": FACTS,
    "data": "fashion-mnist",
    "train_images": 40,
    "steps": 15,
    "epochs": 3,
    "batch_size": 8,
    "global_batch": 8,
    "peak_lr": 0.0005,
    "wall_seconds": 9.5,
    "teacher_seconds": 1.0,
    "student_seconds": 3.0,
    "metric_seconds": 0.1,
    "teacher_flops": 5486137344,
    "student_flops": 15702220800,
    "baseline_flops": 20999208960,
    "flops_saving": -0.009,
    "final_block": 6,
    "pending_block": 6,
    "start_block": 4,
    "level_ups": [1, 2],
    "level_up_events": [
        {"step": 1, "from_block": 4, "to_block": 5, "reason": "threshold"},
        {"step": 2, "from_block": 5, "to_block": 6, "reason": "threshold"},
    ],
    "threshold": 0.85,
    "evaluation": None,
    "eval": {"fashion-mnist": {"knn": {"top1": 0.5, "top5": 0.9}}},
    "a_key_of_a_newer_version": {"kept": True},
}


def _run(tmp_path: Path, record: dict) -> RunDirectory:
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    run.summary.write_text(json.dumps(record))
    return run


def test_an_older_summary_reads_typed_and_writes_back_unchanged(tmp_path):
    s = load_summary(_run(tmp_path, VERSION_1))
    assert s.version == 1 and s.teacher.blocks == 6 and s.level_up_events[1].to_block == 6
    assert s.evaluation is None and s.eval["fashion-mnist"]["knn"]["top1"] == 0.5
    assert s.record() == VERSION_1  # nothing added, nothing lost (unknown keys included)


def test_assemble_keeps_what_other_commands_merged_and_drops_an_earlier_failure():
    earlier = {"eval": VERSION_1["eval"], "status": "failed", "failed_after_step": 7, "error": "disk full"}
    parts = {k: v for k, v in VERSION_1.items() if k not in ("eval", "start_block", "level_ups", "level_up_events")}
    method = MethodSummary(start_block=6, level_ups=[], level_up_events=[])
    s = RunSummary.assemble(earlier, parts, method, FlopsSummary(teacher_flops=1, student_flops=2, baseline_flops=3,
                                                                 flops_saving=0.0))  # fmt: skip
    record = s.record()
    assert record["version"] == SUMMARY_VERSION and record["status"] == "completed"
    assert "failed_after_step" not in record and "error" not in record
    assert record["eval"] == VERSION_1["eval"] and record["teacher_flops"] == 1 and record["start_block"] == 6


def test_a_summary_of_a_failed_start_or_a_foreign_file_is_an_error(tmp_path):
    with pytest.raises(LeapkdError, match="failed after step 3"):
        load_summary(_run(tmp_path, {"status": "failed", "failed_after_step": 3, "error": "x"}))
    assert load_summary(RunDirectory(tmp_path / "run"), missing_ok=True) is None
    (tmp_path / "run" / "summary.json").write_text(json.dumps({**VERSION_1, "steps": "many"}))
    with pytest.raises(LeapkdError, match="steps"):
        load_summary(RunDirectory(tmp_path / "run"))


def test_headline_rows_say_what_the_summary_holds():
    s = RunSummary.model_validate(VERSION_1)
    rows = dict(headline_rows(s))
    assert rows["teacher → student"] == "vit-nano (6 blocks) → vit-nano (6 blocks, 1.29 M parameters)"
    assert rows["data"] == "fashion-mnist, 40 training images, 64 px"
    assert rows["target block"] == "4 → 6 of 6" and rows["level-ups at steps"] == "1, 2"
    assert rows["FLOPs saving vs fixed target"] == "-0.9%" and rows["status"] == "completed"
    assert rows["kNN top-1 on fashion-mnist"] == "50.00%"
