"""When does LEAP help? LEAP against the fixed target across students, recipes and lengths.

Usage:
  python bench/leap_lead.py                    # the grid: 2 students x 2 recipes x 1,000 steps (hours on 2 cores)
  python bench/leap_lead.py --part grid --recipes demo   # only the demo recipe's half of the grid
  python bench/leap_lead.py --part ablations   # why: the curriculum's knobs on vit-tiny, 250 steps
  python bench/leap_lead.py --quick            # smoke test: tiny runs, a minute or two

Every run distils the embedded DINOv2 ViT-S/14 teacher on Animal-MNIST (80 training images
per class, 112 px, batch 32, fp32, loader in the training process) and scores the student
with kNN at every tenth of the run (every 100 steps in the grid; 50 fixed images per class of
each split); the final student is also scored with `leapkd eval`'s kNN and linear probe
(100 / 50 images per class). `leap-paper` is the corrected recipe at this scale: its epoch counts (warm-up
min(10, epochs / 10), 5 of 100 epochs per block) scaled to the run's epochs.

Each finished run is stored in <out>/benchmarks/leap_lead.json at once, so an interrupted
benchmark continues where it stopped (a run is reused when its configuration is unchanged;
--fresh starts over). Then the section "When LEAP helps" of OUT/benchmarks.md and its curves
are drawn from the JSON (bench/leap_lead_page.py; --render-only draws them alone).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import git_commit, machine  # noqa: E402
from gpu_page import replace_section  # noqa: E402
from leap_lead_page import END, START_PREFIX, render_section  # noqa: E402

from leapkd.eval.runner import evaluate  # noqa: E402
from leapkd.models import EMBEDDED_TEACHER  # noqa: E402
from leapkd.recipes import recipe_values  # noqa: E402
from leapkd.rundir import read_metrics  # noqa: E402
from leapkd.training import distill  # noqa: E402

DATA = "animal-mnist"
STEPS_PER_EPOCH = {False: 25, True: 2}  # 80 (quick: 8) images x 10 classes / batch 32, the last batch dropped
GRID = {"vit-nano": (0, 1, 2), "vit-tiny": (0, 1)}
ABLATION_STUDENT, ABLATION_SEEDS, ABLATION_STEPS = "vit-tiny", (0, 1), 250
# Each ablation changes one thing of the demo's `leap` run (or is the fixed target).
ABLATIONS: dict[str, dict[str, Any]] = {
    "fixed": {"method": "fixed"},
    "leap": {"method": "leap"},
    "leap, projector reset at level-up": {"method": "leap", "reset_projector": True},
    "leap, CLS term 0.05": {"method": "leap", "cls_weight": 0.05},
    "leap, 3 epochs per block": {"method": "leap", "max_epochs_per_block": 3},
    "leap, LR restart at level-up": {"method": "leap", "lr_reset": "peak"},
    "leap, no calibration": {"method": "leap", "calibrate": False},
    "leap, snap to last from block 4": {"method": "leap", "snap_to_last": 4},
}
# The leap-paper recipe's keys that give way to this benchmark's models, size, data and length.
SCALE_KEYS = ("teacher", "teacher_pretrained", "student", "image_size", "epochs", "batch_size", "subset_per_class")


def leap_paper_at(epochs: int) -> dict[str, Any]:
    """The leap-paper recipe's training with its epoch counts scaled to `epochs` (reference: 100)."""
    values = {k: v for k, v in recipe_values("leap-paper").items() if k not in SCALE_KEYS}
    values["warmup_epochs"] = min(10, epochs // 10)
    values["max_epochs_per_block"] = max(1, round(values["max_epochs_per_block"] * epochs / 100))
    return values


def run_config(student: str, recipe: str, method: str, seed: int, steps: int, quick: bool) -> dict[str, Any]:
    epochs = steps // STEPS_PER_EPOCH[quick]
    cfg: dict[str, Any] = {
        "teacher": EMBEDDED_TEACHER,
        "student": student,
        "data": DATA,
        "image_size": 56 if quick else 112,
        "subset_per_class": 8 if quick else 80,
        "batch_size": 32,
        "epochs": epochs,
        "seed": seed,
        "precision": "32",
        "num_workers": 0,
        "eval_every": max(1, steps // 10),
        "eval_images_per_class": 5 if quick else 50,
    }
    if recipe == "leap-paper":
        cfg.update(leap_paper_at(epochs))
    cfg["method"] = method
    if method == "fixed":  # the fixed target has no curriculum keys
        for key in ("threshold", "alpha", "max_epochs_per_block", "snap_to_last", "calibrate"):
            cfg.pop(key, None)
    return cfg


def measure(cfg: dict[str, Any], runs_dir: Path, name: str, quick: bool) -> dict[str, Any]:
    """Train, then read the run's curve and score the final student."""
    run_dir = runs_dir / name
    start = time.perf_counter()
    distill(dict(cfg), name=name, output_dir=str(runs_dir), overwrite=True, progress=False)
    s = json.loads((run_dir / "summary.json").read_text())
    if s["status"] != "completed":  # a signal stopped it: not a result, and the benchmark stops too
        raise SystemExit(f"{name} stopped early ({s['status']} after step {s['steps']}); run the benchmark again")
    sizes = {"train_per_class": 10, "val_per_class": 5} if quick else {"train_per_class": 100, "val_per_class": 50}
    final = evaluate(str(run_dir), protocols=("knn", "linear"), progress=False, **sizes)
    s = json.loads((run_dir / "summary.json").read_text())  # with the evaluation merged in
    rows = read_metrics(run_dir / "metrics.csv")
    last = s["teacher"]["blocks"]
    at_last = [int(r["step"]) for r in rows if r.get("target_block") == last]
    curve = [(e["step"], e["knn_top1"]) for e in s["evaluation"]["history"]]
    return {
        "config": cfg,
        "knn_top1": final["knn"]["top1"],
        "linear_top1": final["linear"]["top1"],
        "curve": curve,
        "flops_saving": s["flops_saving"],
        "training_flops": s["teacher_flops"] + s["student_flops"],
        "wall_seconds": s["wall_seconds"],
        "last_block_from_step": at_last[0] if at_last else None,
        "level_ups": s.get("level_ups"),
        "minutes": (time.perf_counter() - start) / 60,
    }


def plan(part: str, recipes: tuple[str, ...], quick: bool) -> list[tuple[str, dict[str, Any]]]:
    """(key, config) of every run of the part, methods interleaved within each seed."""
    runs = []
    if part == "grid":
        steps = 8 if quick else 1000
        for seed in range(3):
            for student, seeds in GRID.items():
                if seed not in seeds or (quick and seed > 0):
                    continue
                for recipe in recipes:
                    for method in ("fixed", "leap"):
                        key = f"grid/{student}/{recipe}/{method}/s{seed}"
                        runs.append((key, run_config(student, recipe, method, seed, steps, quick)))
    else:
        steps = 8 if quick else ABLATION_STEPS
        for seed in ABLATION_SEEDS[:1] if quick else ABLATION_SEEDS:
            for label, keys in ABLATIONS.items():
                cfg = {**run_config(ABLATION_STUDENT, "demo", keys["method"], seed, steps, quick), **keys}
                runs.append((f"ablation/{label}/s{seed}", cfg))
    return runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("grid", "ablations"), action="append", help="default: both")
    p.add_argument("--recipes", default="demo,leap-paper", help="the grid's recipes (comma-separated)")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny runs, one seed")
    p.add_argument("--fresh", action="store_true", help="run everything again")
    p.add_argument("--render-only", action="store_true", help="draw the page section from the JSON, run nothing")
    p.add_argument("--out", type=Path, default=Path("docs"), help="writes OUT/benchmarks/leap_lead.json")
    p.add_argument("--runs-dir", type=Path, default=None, help="run directories (default: runs/leap_lead[-quick])")
    args = p.parse_args(argv)
    runs_dir = args.runs_dir or Path("runs") / ("leap_lead-quick" if args.quick else "leap_lead")
    path = args.out / "benchmarks" / ("leap_lead-quick.json" if args.quick else "leap_lead.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    store: dict[str, Any] = json.loads(path.read_text()) if path.is_file() and not args.fresh else {}
    results: dict[str, Any] = store.setdefault("runs", {})
    for result in results.values():  # runs saved before each run kept its own: the machine of the last save
        result.setdefault("cpu", store["machine"]["cpu"])
    recipes = tuple(r.strip() for r in args.recipes.split(","))
    for part in [] if args.render_only else args.part or ("grid", "ablations"):
        for key, cfg in plan(part, recipes, args.quick):
            if key in results and results[key]["config"] == json.loads(json.dumps(cfg)):  # tuples read back as lists
                print(f"reusing {key}", flush=True)
                continue
            print(f"running {key}", flush=True)
            results[key] = {**measure(cfg, runs_dir, key.replace("/", "-").replace(", ", "-").replace(" ", "_"),
                                      args.quick), "commit": git_commit(), "cpu": machine()["cpu"]}  # fmt: skip
            store.update(machine=machine(), finished=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
            path.write_text(json.dumps(store, indent=1))
    if results:
        page = args.out / "benchmarks.md"
        text = page.read_text() if page.is_file() else "# Benchmarks\n"
        page.write_text(replace_section(text, render_section(store, path.parent), START_PREFIX, END))
        print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
