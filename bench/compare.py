"""The method benchmark: fixed target vs LEAP vs SpectralKD vs LEAP + spectral loss.

Usage:
  python bench/compare.py                # 3 seeds x 4 methods x 250 steps + overhead, ~1 hour on 2 cores
  python bench/compare.py --students     # fixed vs leap into other students (a CNN, a patch-16 ViT), ~1 hour
  python bench/compare.py --quick [--students]   # smoke tests: 1 seed, tiny runs, a minute or two

Every method distils the embedded DINOv2 ViT-S/14 teacher into the same `vit-nano`
student on the built-in Fashion-MNIST, with the same steps, data order and seed. Each run
saves its student every `steps / 5` steps; every snapshot is evaluated with kNN and the
final student also with the linear probe (`leapkd eval`'s protocols), giving kNN top-1
against measured training FLOPs and wall seconds. Runs are executed one after another,
methods interleaved within each seed, so machine load drifts over all methods alike.

Writes <out>/benchmarks.md and <out>/benchmarks/ (results.json, overhead.json, plots); the page
and plots are drawn by bench/page.py.
Finished runs under --runs-dir are reused when their configuration matches, so an
interrupted benchmark continues where it stopped (--fresh starts over).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import measure_overhead  # noqa: E402
from page import plot_early_exit, plot_time_to_accuracy, write_page  # noqa: E402
from stats import mean_spread, verdict  # noqa: E402

from leapkd.eval.runner import evaluate  # noqa: E402
from leapkd.methods import load_config  # noqa: E402
from leapkd.models import EMBEDDED_TEACHER  # noqa: E402
from leapkd.rundir import read_metrics  # noqa: E402
from leapkd.training import distill, resolve_config  # noqa: E402

METHODS: dict[str, dict[str, Any]] = {
    "fixed": {"method": "fixed"},
    "leap": {"method": "leap"},
    "spectralkd": {"method": "spectralkd"},
    "leap+spectral": {"method": "leap", "spectral_weight": 0.2},
}
PAPER = {"flops_saving": 0.251, "time_saving": 0.21, "points": 12.24}
# Students of other families and grids, each distilled with fixed and leap (`--students`).
STUDENTS: dict[str, str] = {
    "mobilenetv3_small_100": "CNN (MobileNetV3-Small): 5 feature stages, no CLS; its last stage resampled to the "
    "teacher's grid",
    "deit_tiny_patch16_224": "ViT with patch 16 (the teacher's is 14): its 7x7 grid resampled to the teacher's 8x8",
}
STUDENT_METHODS = ("fixed", "leap")


@dataclass(frozen=True)
class Setting:
    """What one benchmark runs: the distillation runs, their evaluation and the overhead test."""

    seeds: tuple[int, ...]
    image_size: int
    subset_per_class: int
    batch_size: int
    epochs: int
    snapshots: int  # evaluated points per run, besides step 0
    eval_train_per_class: int
    eval_val_per_class: int
    overhead_steps: int
    overhead_rounds: int

    @property
    def steps(self) -> int:
        return self.subset_per_class * 10 // self.batch_size * self.epochs

    def distill_config(
        self, label: str, seed: int, student: str = "vit-nano", snapshots: bool = True
    ) -> dict[str, Any]:
        return {
            "teacher": EMBEDDED_TEACHER,
            "student": student,
            "data": "fashion-mnist",
            "image_size": self.image_size,
            "subset_per_class": self.subset_per_class,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "seed": seed,
            "snapshot_every": max(1, self.steps // self.snapshots) if snapshots else None,
            "precision": "32",  # as the recorded results were measured; bench/hardware.py compares bf16
            "num_workers": 0,  # likewise (the loader in the training process)
            **METHODS[label],
        }


DEFAULT = Setting((0, 1, 2), 112, 80, 32, 10, 5, 100, 50, overhead_steps=10, overhead_rounds=3)
QUICK = Setting((0,), 56, 8, 16, 2, 2, 10, 5, overhead_steps=2, overhead_rounds=1)
# The students comparison needs an image size both patch sizes divide (14 and 16): 112.
QUICK_STUDENTS = replace(QUICK, image_size=112)


# ----- running ------------------------------------------------------------------------------
def run_name(label: str, seed: int) -> str:
    return f"{label.replace('+', '-')}-s{seed}"


def _finished_run(run_dir: Path, cfg: dict[str, Any]) -> bool:
    """True when run_dir holds a completed run of exactly this configuration."""
    summary, config = run_dir / "summary.json", run_dir / "config.yaml"
    if not (summary.is_file() and config.is_file() and (run_dir / "student.safetensors").is_file()):
        return False
    if json.loads(summary.read_text()).get("status") != "completed":
        return False
    wanted = resolve_config(None, {**cfg, "name": run_dir.name, "output_dir": str(run_dir.parent)})
    return load_config(config).model_dump() == wanted.model_dump()


def run_all(setting: Setting, runs_dir: Path, fresh: bool, progress: bool) -> list[Path]:
    """Every (seed, method) run, methods interleaved within each seed."""
    dirs = []
    for seed in setting.seeds:
        for label in METHODS:
            cfg = setting.distill_config(label, seed)
            run_dir = runs_dir / run_name(label, seed)
            if not fresh and _finished_run(run_dir, cfg):
                print(f"reusing {run_dir}", flush=True)
            else:
                print(f"running {label}, seed {seed} -> {run_dir}", flush=True)
                distill(cfg, name=run_dir.name, output_dir=str(runs_dir), overwrite=True, progress=progress)
            dirs.append(run_dir)
    return dirs


def run_students(setting: Setting, runs_dir: Path, fresh: bool, progress: bool) -> list[tuple[str, str, Path]]:
    """Every (seed, student, method) run of the students comparison, methods interleaved."""
    done = []
    for seed in setting.seeds:
        for student in STUDENTS:
            for label in STUDENT_METHODS:
                cfg = setting.distill_config(label, seed, student, snapshots=False)
                run_dir = runs_dir / f"{student}-{run_name(label, seed)}"
                if not fresh and _finished_run(run_dir, cfg):
                    print(f"reusing {run_dir}", flush=True)
                else:
                    print(f"running {label} -> {student}, seed {seed} -> {run_dir}", flush=True)
                    distill(cfg, name=run_dir.name, output_dir=str(runs_dir), overwrite=True, progress=progress)
                done.append((student, label, run_dir))
    return done


def measure_students(setting: Setting, runs_dir: Path, fresh: bool, progress: bool) -> dict[str, Any]:
    """The students comparison: final kNN and linear probe, FLOPs and wall time, per student."""
    start = time.perf_counter()
    info = machine()
    done = run_students(setting, runs_dir, fresh, progress)
    print("evaluating", flush=True)
    runs = [{**evaluate_run(d, setting, label), "student": s} for s, label, d in done]
    tables = {s: aggregate([r for r in runs if r["student"] == s], STUDENT_METHODS) for s in STUDENTS}
    return {
        "machine": info,
        "commit": git_commit(),
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "total_minutes": (time.perf_counter() - start) / 60,
        "setting": asdict(setting),
        "steps": setting.steps,
        "students": STUDENTS,
        "runs": runs,
        "tables": tables,
    }


# ----- evaluating ---------------------------------------------------------------------------
def _snapshot_meta(path: Path) -> dict[str, Any]:
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    return {k: json.loads(meta[k]) for k in ("step", "flops", "wall_seconds")}


def evaluate_run(run_dir: Path, setting: Setting, label: str) -> dict[str, Any]:
    """kNN at every snapshot and kNN + linear probe for the final student."""
    sizes = {"train_per_class": setting.eval_train_per_class, "val_per_class": setting.eval_val_per_class}
    curve = []
    for snap in sorted((run_dir / "snapshots").glob("step-*.safetensors")):
        out = run_dir / "snapshots" / snap.stem
        knn = evaluate(str(snap), protocols=("knn",), out_dir=out, progress=False, **sizes)
        curve.append({**_snapshot_meta(snap), "knn_top1": knn["knn"]["top1"]})
    final = evaluate(str(run_dir), protocols=("knn", "linear"), progress=False, **sizes)
    s = json.loads((run_dir / "summary.json").read_text())
    last = s["teacher"]["blocks"]
    at_last = [int(r["step"]) for r in read_metrics(run_dir / "metrics.csv") if r["target_block"] == last]
    return {
        "method": label,
        "seed": load_config(run_dir / "config.yaml").seed,
        "run_dir": str(run_dir),
        "knn_top1": final["knn"]["top1"],
        "linear_top1": final["linear"]["top1"],
        "steps": s["steps"],
        "training_flops": s["teacher_flops"] + s["student_flops"],
        "teacher_flops": s["teacher_flops"],
        "student_flops": s["student_flops"],
        "baseline_flops": s["baseline_flops"],
        "flops_saving": s["flops_saving"],
        "wall_seconds": s["wall_seconds"],
        "teacher_seconds": s["teacher_seconds"],
        "student_seconds": s["student_seconds"],
        "metric_seconds": s["metric_seconds"],
        "final_block": s["final_block"],
        "last_block_from_step": at_last[0] if at_last else None,
        "level_ups": s["level_ups"],
        "curve": curve,
    }


def evaluate_teacher(setting: Setting, out: Path) -> dict[str, float]:
    r = evaluate(
        EMBEDDED_TEACHER,
        protocols=("knn", "linear"),
        image_size=setting.image_size,
        train_per_class=setting.eval_train_per_class,
        val_per_class=setting.eval_val_per_class,
        out_dir=out,
        progress=False,
    )
    return {"knn_top1": r["knn"]["top1"], "linear_top1": r["linear"]["top1"]}


# ----- aggregating --------------------------------------------------------------------------
def aggregate(runs: list[dict[str, Any]], methods: Any = tuple(METHODS)) -> dict[str, dict[str, Any]]:
    """Per method: mean and spread of every figure; kNN/linear and wall time against fixed."""
    fixed_wall = {r["seed"]: r["wall_seconds"] for r in runs if r["method"] == "fixed"}
    table: dict[str, dict[str, Any]] = {}
    for label in methods:
        rs = [r for r in runs if r["method"] == label]
        row: dict[str, Any] = {"seeds": [r["seed"] for r in rs]}
        for key in ("knn_top1", "linear_top1", "training_flops", "flops_saving", "wall_seconds", "final_block"):
            row[key] = mean_spread([float(r[key]) for r in rs])
        savings = [1 - r["wall_seconds"] / fixed_wall[r["seed"]] for r in rs]
        row["wall_saving"] = mean_spread(savings)
        row["wall_per_flops_saving"] = (
            row["wall_saving"][0] / row["flops_saving"][0] if row["flops_saving"][0] > 0 else None
        )
        table[label] = row
    for row in table.values():
        for key in ("knn_top1", "linear_top1"):
            (m, s), (fm, fs) = row[key], table["fixed"][key]
            spread = None if s is None or fs is None else max(s, fs)
            row[f"{key}_vs_fixed"] = {"diff": m - fm, "spread": spread, "verdict": verdict(m - fm, spread)}
    return table


def machine() -> dict[str, Any]:
    cpu = ""
    if Path("/proc/cpuinfo").is_file():
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "")
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.machine()}",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def early_exit_flops_relative(setting: Setting) -> list[float]:
    """Training-step FLOPs at each teacher depth relative to full depth, from a counted step."""
    from leapkd.accounting import student_step_flops, teacher_flops_by_depth
    from leapkd.models import freeze, load_backbone

    teacher = freeze(load_backbone(EMBEDDED_TEACHER, setting.image_size))
    student = load_backbone("vit-nano", setting.image_size, patch_size=teacher.patch_size)
    projector = torch.nn.Linear(student.width, teacher.width)
    images = torch.randn(setting.batch_size, 3, setting.image_size, setting.image_size)
    by_depth = teacher_flops_by_depth(teacher, images)
    target = teacher.forward_to(images, teacher.num_levels).patches.detach()

    def step() -> torch.Tensor:
        projected = projector(student.forward_to(images, student.num_levels).patches)
        return torch.nn.functional.mse_loss(projected, target)

    s = student_step_flops(step)
    return [(t + s) / (by_depth[-1] + s) for t in by_depth]


def measure_all(setting: Setting, runs_dir: Path, assets: Path, fresh: bool, progress: bool) -> dict[str, Any]:
    """Run, evaluate and time everything; the results as one JSON-ready dict."""
    start = time.perf_counter()
    info = machine()
    dirs = run_all(setting, runs_dir, fresh, progress)
    print("evaluating snapshots", flush=True)
    runs = [evaluate_run(d, setting, label) for d, label in zip(dirs, list(METHODS) * len(setting.seeds))]
    teacher = evaluate_teacher(setting, assets / "teacher-eval")
    print("measuring the engine overhead", flush=True)
    overhead = measure_overhead(setting.overhead_steps, setting.overhead_rounds, setting.image_size, setting.batch_size)
    (assets / "overhead.json").write_text(json.dumps(overhead, indent=2) + "\n")
    return {
        "machine": info,
        "commit": git_commit(),
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "total_minutes": (time.perf_counter() - start) / 60,
        "setting": asdict(setting),
        "steps": setting.steps,
        "teacher": teacher,
        "runs": runs,
        "table": aggregate(runs),
        "overhead": overhead,
        "early_exit_flops_relative": early_exit_flops_relative(setting),
        "paper": PAPER,
        "teacher_name": EMBEDDED_TEACHER,
    }


def git_commit() -> str | None:
    """The code's commit (with "+changes" when the tree differs from it), or None outside git."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)

    try:
        head, dirty = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "src", "bench")
    except OSError:
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: one seed, tiny runs (a few minutes)")
    p.add_argument("--out", type=Path, default=Path("docs"), help="writes OUT/benchmarks.md and OUT/benchmarks/")
    p.add_argument("--runs-dir", type=Path, default=None, help="run directories (default: runs/bench[-quick])")
    p.add_argument("--fresh", action="store_true", help="re-run finished runs instead of reusing them")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--render-only", action="store_true", help="rewrite the page and plots from OUT's results.json")
    p.add_argument("--students", action="store_true", help="run the other-students comparison (students.json)")
    args = p.parse_args(argv)
    setting = QUICK if args.quick else DEFAULT
    runs_dir = args.runs_dir or Path("runs") / ("bench-quick" if args.quick else "bench")
    assets = args.out / "benchmarks"
    assets.mkdir(parents=True, exist_ok=True)
    command = "python bench/compare.py" + (" --quick" if args.quick else "")
    if args.render_only:
        results = json.loads((assets / "results.json").read_text())
    elif args.students:
        setting = QUICK_STUDENTS if args.quick else DEFAULT
        students = measure_students(setting, runs_dir, args.fresh, progress=not args.no_progress)
        students["command"] = command + " --students"
        (assets / "students.json").write_text(json.dumps(students, indent=2) + "\n")
        results = json.loads((assets / "results.json").read_text())
    else:
        results = measure_all(setting, runs_dir, assets, args.fresh, progress=not args.no_progress)
        results["command"] = command
        (assets / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot_time_to_accuracy(results["runs"], results["teacher"]["knn_top1"], assets / "time_to_accuracy.png")
    plot_early_exit(results["overhead"], results["early_exit_flops_relative"], assets / "early_exit.png")
    page = write_page(args.out)
    print(page.read_text())
    print(f"written: {page} and {assets}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
