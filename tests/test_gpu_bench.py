"""bench/gpu.py, the prepared device check: its dry run end to end on the CPU (the same code
paths as on the GPU, tiny sizes), and its pure helpers on fixed numbers."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

import gpu  # noqa: E402
import gpu_figures as fig  # noqa: E402
from gpu_page import END, START, render_section, replace_section  # noqa: E402

PARTS = ("tests", "peak", "throughput", "early_exit", "overhead", "pipeline", "demo", "eval_export", "baseline",
         "compile")  # fmt: skip
DOCS = (REPO / "docs" / "benchmarks.md", REPO / "docs" / "benchmarks" / "gpu.json")


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu")
    before = [_digest(p) for p in DOCS]
    cmd = [sys.executable, str(BENCH / "gpu.py"), "--dry-run", "--out", str(tmp / "out")]
    cmd += ["--work-dir", str(tmp / "work")]
    subprocess.run(cmd, check=True, cwd=tmp, timeout=300)
    assert [_digest(p) for p in DOCS] == before, "a dry run must not write under docs/"
    return tmp, json.loads((tmp / "out" / "gpu.json").read_text()), (tmp / "out" / "gpu.md").read_text()


def test_dry_run_runs_every_part(dry_run):
    _, results, _ = dry_run
    assert results["dry_run"] is True
    assert list(results["parts"]) == list(PARTS)
    for name, part in results["parts"].items():
        assert part["status"] in ("ok", "skipped"), (name, part.get("error"), part.get("traceback"))
        assert part["part_seconds"] >= 0
    for key in ("device", "torch", "timm", "lightning", "python", "commit", "command", "started", "finished"):
        assert results["header"][key], key
    assert "--dry-run" in results["header"]["command"]
    assert results["parts"]["baseline"]["status"] == "skipped"  # no --baseline-src


def test_dry_run_figures_are_plausible(dry_run):
    _, results, _ = dry_run
    parts = results["parts"]
    assert parts["peak"]["tflops_median"] > 0
    rows = parts["throughput"]["rows"]
    assert {r["label"] for r in rows} == {"ViT-B/14", "ViT-L/14"} and len(rows) == 4  # batch and largest batch
    for r in rows:
        assert r["images_per_second"] > 0 and r["seconds_per_step"] > 0 and r["flops_per_step"] > 0
        assert r["mfu"] is None or 0 < r["mfu"] < 1  # None on the CPU
        assert r["precision"] == "bf16-mixed" and r["teacher_dtype"] == "bfloat16"
    early = parts["early_exit"]["rows"]
    assert [r["depth"] for r in early] == [1, 2, 3, 4]
    assert all(0 < r["flops_relative"] <= 1 for r in early) and early[-1]["wall_per_flops_saving"] is None
    assert parts["overhead"]["bare_median_seconds_per_step"] > 0 and parts["overhead"]["overhead"] is not None
    assert parts["compile"]["compiled_seconds_per_step"] > 0
    assert [r["workers"] for r in parts["pipeline"]["rows"]] == [0, 1]
    assert all(r["images_per_second"] > 0 for r in parts["pipeline"]["rows"])
    demo = parts["demo"]
    assert demo["precision"] in ("bf16-mixed", "32") and demo["precision_reason"].startswith("auto")
    assert demo["whole_command_seconds"] > demo["training_loop_seconds"] > 0 and demo["images_per_second"] > 0
    io = parts["eval_export"]
    assert 0 <= io["knn"]["cpu"]["top1"] <= 1
    assert io["features"]["fp32_matmul_highest"]["max_abs_diff"] == 0  # CPU against CPU in the dry run
    assert io["onnx"]["onnx_vs_torch_on_device"]["max_abs_diff"] < 1e-3


def test_dry_run_section_is_labelled_and_marked(dry_run):
    _, results, section = dry_run
    assert section.startswith(START) and section.rstrip().endswith(END)
    assert "Dry run on CPU: figures are not GPU figures" in section
    assert "Measured on the device" not in section
    for title in ("Throughput at the size users train at", "Early exit", "The engine against a bare PyTorch loop",
                  "The input pipeline alone", "The README's `leapkd distill`"):  # fmt: skip
        assert f"### {title}" in section
    assert section == render_section(results)  # the section is a function of gpu.json


def test_the_baseline_child_measures_one_run(dry_run, capsys):
    import gpu_parts_io

    tmp, results, _ = dry_run
    kwargs = {"method": "fixed", "teacher": "vit_base_patch14_dinov2", "allow_random_teacher": True,
              "teacher_kwargs": {"depth": 2, "embed_dim": 32, "num_heads": 2}, "student": "vit-nano",
              "data": str(tmp / "work" / "jpegs"), "image_size": 28, "batch_size": 8, "max_steps": 3,
              "precision": "bf16-mixed", "num_workers": 0, "output_dir": str(tmp / "child"), "name": "child",
              "progress": False, "accelerator": "cpu"}  # fmt: skip
    gpu_parts_io.child_run(json.dumps({"kwargs": kwargs, "warmup": 1}))
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(gpu_parts_io.CHILD_MARK))
    row = json.loads(line[len(gpu_parts_io.CHILD_MARK) :])
    assert row["images_per_second"] > 0 and row["timed_steps"] == 2
    assert row["leapkd_file"].startswith(str(REPO / "src"))


# ----- pure helpers -------------------------------------------------------------------------------
def test_mfu_is_flops_over_time_over_peak():
    assert fig.mfu(2e12, 0.01, 400e12) == pytest.approx(0.5)
    assert fig.mfu(None, 0.01, 400e12) is None
    assert fig.mfu(2e12, 0.0, 400e12) is None
    assert fig.mfu(2e12, 0.01, None) is None


def test_timed_window_drops_the_warm_up():
    rows = [{"wall_seconds": w, "flops": 10 * (i + 1)} for i, w in enumerate([5.0, 6.0, 6.5, 7.0, 7.5])]
    window = fig.timed_window(rows, warmup=2)
    assert window["timed_steps"] == 3
    assert window["seconds_per_step"] == pytest.approx(0.5)
    assert window["flops_per_step"] == pytest.approx(10)
    assert fig.timed_window(rows[:2], warmup=10)["timed_steps"] == 1  # a short run keeps its last step
    with pytest.raises(ValueError):
        fig.timed_window(rows[:1], warmup=1)


def test_saving_ratio_and_helpers():
    assert fig.saving_ratio(0.6, 1.0, 0.5, 1.0) == pytest.approx(0.8)
    assert fig.saving_ratio(1.0, 1.0, 1.0, 1.0) is None
    assert fig.relative_error(110, 100) == pytest.approx(0.1)
    assert fig.exit_depths(24) == [6, 12, 18, 24] and fig.exit_depths(4) == [1, 2, 3, 4]
    assert fig.known_depth("vit_large_patch14_dinov2") == 24
    assert fig.known_depth("vit_base_patch14_dinov2", {"depth": 3}) == 3


def test_pytest_counts_reads_the_summary_line():
    out = "....s\n== 4 passed, 1 skipped, 120 deselected, 2 warnings in 3.21s =="
    assert fig.pytest_counts(out) == {"passed": 4, "failed": 0, "skipped": 1, "deselected": 120, "error": 0}
    assert fig.pytest_counts("1 failed, 2 passed, 1 error in 2s")["error"] == 1
    assert fig.pytest_counts("no tests ran in 0.1s")["passed"] == 0


def test_parts_by_letter_or_name_in_run_order():
    assert gpu.parse_parts("c,a") == ["tests", "throughput"]
    assert gpu.parse_parts("compile,b") == ["peak", "compile"]
    assert gpu.parse_parts(None)[-1] == "compile"
    with pytest.raises(SystemExit):
        gpu.parse_parts("z")


def _gpu_results() -> dict:
    """A fixed gpu.json as an H200 run would write it (numbers made up for the test)."""
    run = {"teacher": "vit_large_patch14_dinov2", "student": "vit-small", "image_size": 224, "kind": "batch",
           "seconds_per_step": 0.08, "images_per_second": 1600.0, "tflop_per_step": 12.8, "mfu": 0.4,
           "peak_memory_gib": 20.5, "num_workers": 15, "teacher_dtype": "bfloat16"}  # fmt: skip
    header = {"device": "NVIDIA H200", "driver": "580.1", "cuda": "13.0", "cpus": 16, "torch": "2.11.0",
              "timm": "1.0", "lightning": "2.6", "python": "3.12.3", "commit": "abc1234",
              "command": "python bench/gpu.py --out /out", "seconds": 400.0, "budget_seconds": 420.0,
              "finished": "2026-12-05 10:00 UTC"}  # fmt: skip
    parts = {
        "peak": {
            "status": "ok",
            "matrix_size": 8192,
            "dtype": "bfloat16",
            "repeats": 10,
            "timer": "CUDA events",
            "tflops_median": 780.0,
            "tflops_best": 790.0,
        },
        "throughput": {
            "status": "ok",
            "rows": [{**run, "label": "ViT-L/14", "batch_size": 128}],
            "notes": [],
            "plan": {"status": "skipped", "note": "leapkd.plan is not importable"},
        },
        "overhead": {
            "status": "ok",
            "teacher": "ViT-B/14",
            "batch_size": 128,
            "precision": "bf16-mixed",
            "overhead_by_round": [0.02, 0.04],
            "overhead": 0.03,
            "bare_median_seconds_per_step": 0.05,
            "engine_median_seconds_per_step": 0.0515,
        },
        "compile": {"status": "error", "error": "RuntimeError: `inductor` failed"},
        "baseline": {"status": "skipped", "note": "no --baseline-src given"},
    }
    return {"dry_run": False, "header": header, "parts": parts,
            "dataset": {"train_images": 4096, "jpeg_size": "500x375", "mean_jpeg_kib": 70.0}}  # fmt: skip


def test_section_renders_tables_from_a_fixed_json():
    section = render_section(_gpu_results())
    assert section.startswith(START) and section.rstrip().endswith(END)
    assert "Measured on the device" in section and "Dry run" not in section
    assert "NVIDIA H200; driver 580.1, CUDA 13.0" in section and "commit abc1234" in section
    assert "median 780.0 TFLOP/s" in section
    assert "| ViT-L/14 | 128 | 1,600 | 0.0800 | 12.80 | 40.0% | 20.5 | 15 | bfloat16 |" in section
    assert "| engine overhead | 3.0% (per round: 2.0%, 4.0%; target ≤ 5%) |" in section
    assert "Failed: `RuntimeError: 'inductor' failed`" in section
    assert "Skipped: no --baseline-src given" in section
    assert "### Early exit" not in section  # parts that did not run are left out


def test_section_replacement_keeps_the_rest_of_the_page():
    page = (REPO / "docs" / "benchmarks.md").read_text()
    page = replace_section(page, "") if START.split(" (")[0] in page else page  # a page that has none yet
    first = render_section(_gpu_results())
    once = replace_section(page, first)
    assert once.startswith(page.rstrip("\n")) and once.count(START) == 1
    changed = _gpu_results()
    changed["header"]["commit"] = "def5678"
    twice = replace_section(once, render_section(changed))
    assert twice.count(START) == 1 and twice.count(END) == 1 and "def5678" in twice and "abc1234" not in twice
    assert twice.replace(render_section(changed).strip("\n"), "") == once.replace(first.strip("\n"), "")
    middle = replace_section("# Top\n\nA\n\n" + first + "\n## After\n\nB\n", render_section(changed))
    assert middle.startswith("# Top\n\nA\n\n") and middle.endswith("\n## After\n\nB\n")


def test_a_dry_run_never_writes_docs(tmp_path):
    results = {**_gpu_results(), "dry_run": True}
    with pytest.raises(SystemExit):
        gpu.write_outputs(results, None)
    with pytest.raises(SystemExit):
        gpu.main(["--dry-run", "--out", str(REPO / "docs" / "x")])
    json_path, md_path = gpu.write_outputs(results, tmp_path)
    assert json.loads(json_path.read_text())["dry_run"] is True and "Dry run on CPU" in md_path.read_text()


def test_the_benchmark_page_draws_a_gpu_run_but_not_a_dry_run(tmp_path):
    import page

    assets = tmp_path / "benchmarks"
    assets.mkdir()
    shutil.copy(REPO / "docs" / "benchmarks" / "results.json", assets / "results.json")
    (assets / "gpu.json").write_text(json.dumps({**_gpu_results(), "dry_run": True}))
    assert START not in page.write_page(tmp_path).read_text()
    (assets / "gpu.json").write_text(json.dumps(_gpu_results()))
    text = page.write_page(tmp_path).read_text()
    assert text.count(START) == 1 and "| ViT-L/14 | 128 | 1,600 |" in text and text.startswith("# Benchmarks")


def test_the_baseline_child_gets_the_other_tree_first(tmp_path, monkeypatch):
    import gpu_parts_io
    from gpu_setup import DRY, Budget, Context

    monkeypatch.setenv("PYTHONPATH", f"{REPO / 'src'}:/tmp/site")
    ctx = Context(DRY, "cpu", tmp_path, Budget(60))
    env = gpu_parts_io.baseline_env(ctx, str(tmp_path / "old" / "src"))
    assert env["PYTHONPATH"].split(":") == [str((tmp_path / "old" / "src").resolve()), "/tmp/site"]
    assert env["LEAPKD_CACHE"] == str(tmp_path / "cache")


def test_a_rerun_of_some_parts_merges_into_the_first_run():
    first = _gpu_results()
    rerun = {"dry_run": False, "header": {**first["header"], "command": "python bench/gpu.py --parts f,j"},
             "parts": {"compile": {"status": "ok", "teacher": "ViT-B/14", "batch_size": 128},
                       "baseline": {"status": "error", "error": "no tree"}}}  # fmt: skip
    merged = gpu.merge_results([first, rerun])
    assert merged["parts"]["compile"]["status"] == "ok"  # the rerun's success replaces the failure
    assert merged["parts"]["baseline"]["status"] == "error"  # a failure replaces a skip
    assert merged["parts"]["peak"] == first["parts"]["peak"]
    assert list(merged["parts"])[-1] == "compile" and "; then " in merged["header"]["command"]
    assert merged["header"]["seconds"] == 800.0
    with pytest.raises(SystemExit):
        gpu.merge_results([first, {**rerun, "dry_run": True}])
