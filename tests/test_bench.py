"""bench/compare.py: the aggregation rules, and the --quick benchmark end to end (smoke test)."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare", BENCH / "compare.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_difference_within_the_spread_is_no_difference(compare):
    assert compare.verdict(0.01, 0.02) == "no difference"
    assert compare.verdict(-0.02, 0.02) == "no difference"
    assert compare.verdict(0.05, 0.02) == "better"
    assert compare.verdict(-0.05, 0.02) == "worse"
    assert compare.verdict(0.05, None) == "one seed: untested"


def _run(method, seed, knn, wall, saving):
    return {
        "method": method,
        "seed": seed,
        "knn_top1": knn,
        "linear_top1": knn,
        "training_flops": 100.0 * (1 - saving),
        "flops_saving": saving,
        "wall_seconds": wall,
        "final_block": 12,
    }


def test_aggregate_pairs_wall_savings_by_seed(compare):
    runs = []
    for seed, (fixed_wall, leap_wall) in enumerate([(100.0, 90.0), (200.0, 180.0)]):
        runs.append(_run("fixed", seed, 0.50 + seed / 100, fixed_wall, 0.0))
        runs.append(_run("leap", seed, 0.60 + seed / 100, leap_wall, 0.2))
        runs.append(_run("spectralkd", seed, 0.505 + seed / 100, fixed_wall, 0.0))
        runs.append(_run("leap+spectral", seed, 0.50 + seed / 100, leap_wall, 0.2))
    table = compare.aggregate(runs)
    leap = table["leap"]
    assert leap["wall_saving"][0] == pytest.approx(0.10)  # 10% on each seed, despite different walls
    assert leap["wall_saving"][1] == pytest.approx(0.0)
    assert leap["wall_per_flops_saving"] == pytest.approx(0.5)
    assert leap["knn_top1_vs_fixed"]["verdict"] == "better"
    assert table["spectralkd"]["knn_top1_vs_fixed"]["verdict"] == "no difference"
    assert table["fixed"]["wall_per_flops_saving"] is None


def _finite_numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _finite_numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _finite_numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def test_quick_benchmark_writes_the_table(tmp_path):
    out = tmp_path / "docs"
    cmd = [sys.executable, str(BENCH / "compare.py"), "--quick", "--out", str(out)]
    cmd += ["--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    subprocess.run(cmd, check=True, cwd=tmp_path, timeout=600)
    page = (out / "benchmarks.md").read_text()
    for label in ("`fixed`", "`leap`", "`spectralkd`", "`leap+spectral`"):
        assert f"| {label} |" in page
    assert "## Overhead" in page and "## Against the paper" in page
    results = json.loads((out / "benchmarks" / "results.json").read_text())
    assert len(results["runs"]) == 4
    for key in ("runs", "table", "overhead", "teacher"):
        numbers = list(_finite_numbers(results[key]))
        assert numbers and all(math.isfinite(x) for x in numbers), key
    for run in results["runs"]:
        assert [p["step"] for p in run["curve"]] == [0, 5, 10]  # snapshots along the way
    for png in ("time_to_accuracy.png", "early_exit.png"):
        assert (out / "benchmarks" / png).stat().st_size > 10_000
    (out / "benchmarks.md").unlink()
    subprocess.run([sys.executable, str(BENCH / "compare.py"), "--render-only", "--out", str(out)], check=True)
    assert (out / "benchmarks.md").read_text() == page  # the page is a function of results.json

    # the other-students comparison: a CNN and a patch-16 ViT, fixed and leap each
    subprocess.run([*cmd, "--students"], check=True, cwd=tmp_path, timeout=600)
    page = (out / "benchmarks.md").read_text()
    assert "## Other students" in page
    students = json.loads((out / "benchmarks" / "students.json").read_text())
    assert {(r["student"], r["method"]) for r in students["runs"]} == {
        (s, m) for s in ("mobilenetv3_small_100", "deit_tiny_patch16_224") for m in ("fixed", "leap")
    }
    assert all(math.isfinite(x) for x in _finite_numbers(students["tables"]))
    for student in students["tables"]:
        assert f"| `{student}` | `leap` |" in page

    # the recipes benchmark: leap vs fixed by recipe and dataset, SpectralKD's supervised comparison
    recipes = [
        sys.executable,
        str(BENCH / "recipes.py"),
        "--quick",
        "--out",
        str(out),
        "--runs-dir",
        str(tmp_path / "r"),
    ]
    subprocess.run(recipes, check=True, cwd=tmp_path, timeout=600)
    page = (out / "benchmarks.md").read_text()
    assert "## The papers' recipes and comparisons" in page
    for setting in (
        "fashion-mnist / demo",
        "fashion-mnist / leap-paper",
        "animal-mnist / demo",
        "animal-mnist / leap-paper",
    ):
        assert f"| {setting} | `leap` |" in page and f"- {setting}: kNN " in page
    assert "- SpectralKD claims CE + KD + FFT above CE + KD:" in page
    results = json.loads((out / "benchmarks" / "recipes.json").read_text())
    assert all(math.isfinite(x) for x in _finite_numbers(results["supervised"]["table"]))
    assert results["leap_paper_at_demo_scale"]["optimizer"] == "lars" and results["leap_paper_at_demo_scale"]["mixup"]
