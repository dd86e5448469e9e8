"""The console command: help, listings, and errors without tracebacks."""

import json
import re
import subprocess
import sys

import leapkd
from leapkd.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "leapkd", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_commands():
    out = run_cli("--help")
    assert out.returncode == 0
    for cmd in ("distill", "eval", "spectrum", "models", "data"):
        assert cmd in out.stdout


def test_models_lists_teacher_and_presets(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("dinov2-vits14-imgfocus", "vit-nano", "vit-tiny", "vit-small"):
        assert name in out


def test_data_lists_builtins_with_presence(capsys):
    assert main(["data"]) == 0
    out = capsys.readouterr().out
    assert "fashion-mnist" in out and "animal-mnist" in out and "mnist5k" in out


def test_distill_help_documents_every_key():
    out = run_cli("distill", "--help")
    assert out.returncode == 0
    for key in leapkd.DistillConfig.model_fields:
        assert f"--{key}" in out.stdout, key


def test_bad_key_is_a_clean_error(tmp_path):
    out = run_cli("distill", "--treshold", "0.9", "--output-dir", str(tmp_path))
    assert out.returncode == 2
    assert "unknown config key 'treshold'" in out.stderr and "threshold" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_teacher_is_a_clean_error(tmp_path):
    out = run_cli("distill", "--teacher", "dinov2-vits14-imgfocuss", "--output-dir", str(tmp_path))
    assert out.returncode == 2
    assert "unknown model" in out.stderr and "dinov2-vits14-imgfocus" in out.stderr
    assert not any(tmp_path.iterdir())  # nothing written before the inputs were checked


def test_public_api_is_lazy_and_typed():
    code = "import sys, leapkd; assert 'torch' not in sys.modules; leapkd.linear_cka; assert 'torch' in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_all_names_resolve():
    for name in leapkd.__all__:
        assert getattr(leapkd, name) is not None, name


def test_spectrum_command_writes_plots_pairs_and_correlation(tmp_path, capsys, monkeypatch):

    monkeypatch.setenv("LEAPKD_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "spec"
    code = main(
        [
            "spectrum",
            "vit-nano",
            "--student",
            "vit-nano",
            "--image-size",
            "32",
            "--images",
            "8",
            "--pairs",
            "3",
            "--out-dir",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads((out / "spectrum.json").read_text())
    assert report["mirror_correlation"] > 0.99  # the same seeded model on both sides
    assert len(report["proposed_pairs"]) == 3
    assert (out / "spectrum_bands.png").stat().st_size > 0 and (out / "spectrum_intensity.png").stat().st_size > 0
    assert "proposed (student <- teacher) pairs" in capsys.readouterr().out


def test_data_lists_a_missing_dataset_with_its_install_command(capsys, monkeypatch, tmp_path):
    import dataclasses

    from leapkd.data import builtin

    empty = tmp_path / "nothing-here"
    empty.mkdir()
    missing = dataclasses.replace(builtin.BUILTINS["fashion-mnist"], locate=lambda: empty)
    monkeypatch.setitem(builtin.BUILTINS, "fashion-mnist", missing)
    assert main(["data"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("fashion-mnist"))
    assert " no " in line and "apt-get install dataset-fashion-mnist" in line


def test_distill_prints_its_figures_with_the_precision_and_why(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LEAPKD_CACHE", str(tmp_path / "cache"))
    code = main(["distill", "--teacher", "vit-nano", "--allow-random-teacher", "--image-size", "32",
                 "--max-steps", "2", "--precision", "32", "--output-dir", str(tmp_path / "runs"), "--name", "p",
                 "--no-progress"])  # fmt: skip
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "runs" / "p" / "summary.json").read_text())
    assert code == 0
    assert re.search(r"^precision\s+32 \(as configured\)$", out, re.M)
    assert re.search(rf"^images/s\s+{summary['images_per_second']:.1f}$", out, re.M)
    # one set of headline rows: the terminal, the report's "At a glance" and the model card show the same
    from leapkd.deploy import export
    from leapkd.headline import headline_rows
    from leapkd.rundir import RunDirectory
    from leapkd.summary import load_summary

    run = RunDirectory(tmp_path / "runs" / "p")
    rows = headline_rows(load_summary(run))
    report = (run.path / "report.md").read_text()
    card = __import__("pathlib").Path(export(run.path, "safetensors")["card"]).read_text()
    for label, value in rows:
        assert re.search(rf"^{re.escape(label)}\s+{re.escape(value)}$", out, re.M), label
        assert f"| {label} | {value} |" in report and f"| {label} | {value} |" in card, label
