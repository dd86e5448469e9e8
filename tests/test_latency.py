"""CPU latency of an exported student, `export --latency`, the edge table, its Pareto front and plot.

No timing thresholds: only the structure of the figures is checked."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from leapkd import latency as latency_module
from leapkd.cli import main
from leapkd.deploy import export
from leapkd.edge import EdgeRow, Latency, edge_rows, pareto_front
from leapkd.errors import LeapkdError
from leapkd.latency import measure_latency, student_latency
from leapkd.models import load_backbone, save_student_file
from leapkd.plots import plot_edge

LABEL = "latency (ONNX Runtime, CPU, batch 1)"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run as export reads it: an untrained nano student at 32 px (no training needed)."""
    run = tmp_path_factory.mktemp("latency") / "run"
    run.mkdir()
    save_student_file(load_backbone("vit-nano", 32).eval(), run / "student.safetensors")
    return run


@pytest.fixture(scope="module")
def onnx_file(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx")
    export(run_dir, "onnx", out_dir=out)
    return out / "student.onnx"


def test_measure_latency_figures(onnx_file: Path) -> None:
    measured = measure_latency(onnx_file, threads=1, runs=3, warmup=1)
    assert isinstance(measured, Latency)
    assert (measured.threads, measured.runs) == (1, 3)
    assert 0 < measured.median_ms <= measured.p90_ms


def test_student_latency_one_and_all_threads(onnx_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(latency_module, "cpus_available", lambda: 2)
    rows = student_latency(onnx_file, runs=3, warmup=1)
    assert [r.threads for r in rows] == [1, 2]
    assert all(0 < r.median_ms <= r.p90_ms and r.runs == 3 for r in rows)
    monkeypatch.setattr(latency_module, "cpus_available", lambda: 1)
    assert [r.threads for r in student_latency(onnx_file, runs=3, warmup=1)] == [1]


def test_missing_corrupt_file_and_missing_onnxruntime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LeapkdError, match="does not exist") as err:
        measure_latency(tmp_path / "nothing.onnx", threads=1)
    assert "`format` onnx" in err.value.fix
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"this is not a protobuf")
    with pytest.raises(LeapkdError, match="not a readable ONNX model") as err:
        measure_latency(corrupt, threads=1, runs=1, warmup=0)
    assert "export the run again" in err.value.fix
    with pytest.raises(LeapkdError, match="at least 1 thread"):
        measure_latency(corrupt, threads=0)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(LeapkdError, match="latency measurement needs onnxruntime") as err:
        measure_latency(corrupt, threads=1)
    assert err.value.fix == "pip install leapkd[onnx]"


def test_export_latency_cli_manifest_and_model_card(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(latency_module, "cpus_available", lambda: 2)
    out = tmp_path / "export"
    assert main(["export", str(run_dir), "--format", "onnx", "--latency", "--out-dir", str(out)]) == 0
    entry = json.loads((out / "export.json").read_text())["formats"]["onnx"]
    measured = [Latency.model_validate(m) for m in entry["latency"]]
    assert [m.threads for m in measured] == [1, 2] and all(m.runs == 50 for m in measured)
    card = (out / "README.md").read_text()
    for m in measured:
        row = f"| {LABEL} | {m.threads} thread{'s' if m.threads > 1 else ''}: median {m.median_ms:.2f} ms, "
        assert row + f"p90 {m.p90_ms:.2f} ms |" in card
    # a later export of another format keeps the ONNX latency in the card; one without it drops it
    export(run_dir, "safetensors", out_dir=out)
    assert f"| {LABEL} | 1 thread: median" in (out / "README.md").read_text()
    export(run_dir, "onnx", out_dir=out)
    assert LABEL not in (out / "README.md").read_text()
    assert "latency" not in json.loads((out / "export.json").read_text())["formats"]["onnx"]
    capsys.readouterr()


def test_latency_needs_the_onnx_format(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(LeapkdError, match="times the ONNX model") as err:
        export(run_dir, "safetensors", out_dir=tmp_path, latency=True)
    assert "`format` onnx" in err.value.fix
    assert main(["export", str(run_dir), "--format", "timm", "--latency", "--out-dir", str(tmp_path)]) != 0
    assert "--format onnx" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize(
    ("points", "front"),
    [
        ([], []),
        ([(1.0, 0.5)], [True]),
        ([(1.0, 0.5), (2.0, 0.7), (3.0, 0.6), (0.5, 0.2)], [True, True, False, True]),
        ([(1.0, 0.5), (1.0, 0.5)], [True, True]),  # equal points: neither is strictly better
        ([(1.0, 0.5), (1.0, 0.6)], [False, True]),  # as fast, more accurate
        ([(1.0, 0.5), (2.0, 0.5)], [True, False]),  # as accurate, faster
        ([(1.0, 0.5), (2.0, 0.5), (2.0, 0.5)], [True, False, False]),
    ],
)
def test_pareto_front(points: list[tuple[float, float]], front: list[bool]) -> None:
    assert pareto_front(points) == front


def _edge() -> list[EdgeRow]:
    def lat(threads: int, median: float) -> Latency:
        return Latency(threads=threads, runs=3, median_ms=median, p90_ms=median * 1.2)

    return [
        EdgeRow(
            name="nano", params=1_500_000, flops_per_image=300_000_000, latency=[lat(1, 1.0), lat(4, 0.5)],
            quality={"knn_top1": 0.5, "linear_top1": 0.55},
        ),
        EdgeRow(
            name="tiny", params=5_700_000, flops_per_image=1_260_000_000, latency=[lat(1, 3.0), lat(4, 1.0)],
            quality={"knn_top1": 0.6},
        ),
        EdgeRow(name="slow", params=22_000_000, flops_per_image=None, latency=[lat(1, 9.0)], quality={"knn_top1": 0.4}),
        EdgeRow(name="unmeasured", params=1_000_000, quality={"student_top1": 0.7}),
    ]  # fmt: skip


def test_edge_rows_layout() -> None:
    header, table = edge_rows(_edge())
    assert header == [
        "student", "params (M)", "GFLOPs/image", "1 thread ms (median / p90)", "all threads ms (median / p90)",
        "knn_top1", "linear_top1", "student_top1", "Pareto (knn_top1)",
    ]  # fmt: skip
    assert table[0] == ["nano", "1.50", "0.30", "1.00 / 1.20", "0.50 / 0.60", "50.0%", "55.0%", "-", "*"]
    assert table[1][-1] == "*" and table[1][3:5] == ["3.00 / 3.60", "1.00 / 1.20"]
    assert table[2][2] == "-" and table[2][4] == "-" and table[2][-1] == ""  # one thread only; dominated
    assert table[3][3:8] == ["-", "-", "-", "-", "70.0%"] and table[3][-1] == ""  # no latency: not on the front
    header, table = edge_rows(_edge(), quality="linear_top1")
    assert header[-1] == "Pareto (linear_top1)" and [r[-1] for r in table] == ["*", "", "", ""]
    with pytest.raises(LeapkdError, match="no student has the quality figure 'top5'") as err:
        edge_rows(_edge(), quality="top5")
    assert "knn_top1, linear_top1, student_top1" in err.value.fix


def test_plot_edge_writes_a_png(tmp_path: Path) -> None:
    path = plot_edge(_edge(), "knn_top1", tmp_path / "edge.png")
    assert path == tmp_path / "edge.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(LeapkdError, match="no student has both 'top5'"):
        plot_edge(_edge(), "top5", tmp_path / "none.png")
