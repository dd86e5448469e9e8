"""Experiment trackers: W&B (offline) and MLflow (local store) receive what metrics.csv holds."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from leapkd import distill
from leapkd.errors import LeapkdError
from leapkd.rundir import read_metrics


def _scalars(run_dir: Path) -> dict[int, dict[str, float]]:
    """metrics.csv as {step: {column: value}} without the empty cells."""
    return {
        int(r["step"]): {k: v for k, v in r.items() if k != "step" and v is not None}
        for r in read_metrics(run_dir / "metrics.csv")
    }


def _wandb_records(path: Path) -> Iterator[bytes]:
    """The records of a .wandb file: a 7-byte header, then LevelDB-log records in 32 KiB blocks
    (checksum, length, type; type 1 a whole record, 2/3/4 its first, middle and last parts)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending, block = 7, b"", 32768
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:
            break
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            yield pending
            pending = b""


def _wandb_run(run_dir: Path) -> dict:
    """History rows (by step), the tables logged, config and summary keys, read back from the offline run files."""
    from wandb.proto import wandb_internal_pb2

    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    history: dict[int, dict] = {}
    tables: set[str] = set()
    config: dict[str, object] = {}
    summary: set[str] = set()
    for data in _wandb_records(run_file):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            if "trainer/global_step" in row:
                history.setdefault(int(row["trainer/global_step"]), {}).update(row)
            tables |= {k.removesuffix("/_type") for k, v in row.items() if k.endswith("/_type") and v == "table-file"}
        elif kind == "config":
            config |= {item.key: json.loads(item.value_json) for item in record.config.update}
        elif kind == "summary":
            summary |= {item.key or "/".join(item.nested_key) for item in record.summary.update}
    return {"history": history, "tables": tables, "config": config, "summary": summary}


def test_wandb_offline_receives_the_metrics_rows_config_and_summary(tiny, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    r = distill(name="wb", logger="csv,wandb", eval_every=4, eval_images_per_class=5, **tiny)
    logged = _wandb_run(r.run_dir)
    expected = _scalars(r.run_dir)
    for step, row in expected.items():
        got = logged["history"][step]
        assert {k: got[k] for k in row} == pytest.approx(row, rel=1e-6)  # eval_* columns included
    assert any("eval_knn_top1" in row for row in expected.values())
    assert logged["config"]["method"] == "leap" and logged["config"]["eval_every"] == 4
    assert "leapkd" in logged["summary"]  # the whole summary.json
    assert logged["history"][r.summary.steps]["summary/flops_saving"] == pytest.approx(r.summary.flops_saving)
    assert "curriculum" in logged["tables"]  # the level-ups with their reasons
    (table,) = r.run_dir.glob("wandb/offline-run-*/files/media/table/curriculum_*.table.json")
    lines = [row[0] for row in json.loads(table.read_text())["data"]]
    assert len(lines) == len(r.summary.level_up_events) > 0
    assert all(f"({e.reason})" in line for e, line in zip(r.summary.level_up_events, lines))
    assert json.loads((r.run_dir / "trackers.json").read_text())["wandb"]


def test_mlflow_local_store_receives_the_metrics_rows_config_and_summary(tiny):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    r = distill(name="ml", logger=["csv", "mlflow"], eval_every=4, eval_images_per_class=5, **tiny)
    store = Path(tiny["output_dir"]) / "mlflow.db"
    assert store.is_file()  # the default: a local SQLite store beside the runs
    client = MlflowClient(f"sqlite:///{store.resolve()}")
    run_id = json.loads((r.run_dir / "trackers.json").read_text())["mlflow"]
    expected = _scalars(r.run_dir)
    for column in {k for row in expected.values() for k in row}:
        history = {m.step: m.value for m in client.get_metric_history(run_id, column)}
        want = {step: row[column] for step, row in expected.items() if column in row}
        assert history == pytest.approx(want, rel=1e-6), column
    run = client.get_run(run_id)
    assert run.data.params["method"] == "leap" and run.data.params["eval_every"] == "4"
    assert run.info.status == "FINISHED"
    assert run.data.metrics["summary/flops_saving"] == pytest.approx(r.summary.flops_saving)
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    assert json.loads((artifacts / "summary.json").read_text())["steps"] == r.summary.steps
    events = (artifacts / "curriculum.txt").read_text()
    for event in r.summary.level_up_events:
        assert f"block {event.from_block} → {event.to_block} ({event.reason})" in events


def test_resumed_run_logs_to_the_same_mlflow_run(tiny, monkeypatch, interrupt_at):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    with monkeypatch.context() as m:
        interrupt_at(m, 6)
        first = distill(name="mlr", logger="mlflow", **tiny)
    run_id = json.loads((first.run_dir / "trackers.json").read_text())["mlflow"]
    distill(name="mlr", logger="mlflow", resume=True, **tiny)
    assert json.loads((first.run_dir / "trackers.json").read_text())["mlflow"] == run_id
    client = MlflowClient(f"sqlite:///{(Path(tiny['output_dir']) / 'mlflow.db').resolve()}")
    steps = sorted({m.step for m in client.get_metric_history(run_id, "loss")})
    assert steps == list(range(15))  # one run holds every step, before and after the stop


@pytest.mark.parametrize("tracker,package", [("wandb", "wandb"), ("mlflow", "sqlalchemy")])
def test_a_missing_tracker_package_names_its_install_line(tiny, monkeypatch, tracker, package):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    with pytest.raises(LeapkdError) as err:
        distill(name="missing", logger=f"csv,{tracker}", **tiny)
    assert package in str(err.value) and f"pip install 'leapkd[{tracker}]'" in err.value.fix
    assert not (Path(tiny["output_dir"]) / "missing").exists()
