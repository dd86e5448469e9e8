"""The recipes benchmark: the papers' training recipes and comparisons, at the demo's scale.

Usage:
  python bench/recipes.py            # 33 runs, about an hour on 2 cores (bf16 where the CPU has it)
  python bench/recipes.py --quick    # smoke test: tiny runs, a couple of minutes

(a) LEAP against the fixed target under two recipes: `demo` (leapkd's defaults) and
    `leap-paper` (docs/fidelity.md: LARS, sqrt LR scaling, mixup on every batch, the DistillationV2
    augmentation, warm-up in epochs, trunc-normal projector), both with the demo's models,
    image size, data subset, batch and 10 epochs (the recipe's teacher, student, 224 px and
    100 epochs do not fit 2 CPU cores); on Fashion-MNIST and Animal-MNIST; 3 seeds; equal
    steps; kNN and linear probe of the final students, FLOPs and wall time.
(b) SpectralKD's own comparison: the student's top-1 with CE only, CE + logit KD, and
    CE + logit KD + FFT (w_fft 0.2, the paper's pattern of layer pairs), label smoothing 0.1,
    3 seeds, Fashion-MNIST; the headless DINOv2 teacher gets a fitted linear head for KD.

Runs are interleaved within each seed. Writes <out>/benchmarks/recipes.json and redraws
<out>/benchmarks.md (bench/page.py). Finished runs under --runs-dir are reused when their
configuration matches (--fresh starts over).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import DEFAULT, QUICK, Setting, _finished_run, aggregate, evaluate_run, git_commit, machine  # noqa: E402
from page import write_page  # noqa: E402
from stats import mean_spread  # noqa: E402

from leapkd.methods import config_class  # noqa: E402
from leapkd.recipes import recipe_values  # noqa: E402
from leapkd.training import distill  # noqa: E402

DATASETS = ("fashion-mnist", "animal-mnist")
# The leap-paper recipe's training keys; its models, size, epochs and batch give way to the setting's.
SCALE_KEYS = ("teacher", "teacher_pretrained", "student", "image_size", "epochs", "batch_size", "subset_per_class")
LEAP_PAPER_AT_DEMO_SCALE = {
    **{k: v for k, v in recipe_values("leap-paper").items() if k not in SCALE_KEYS},
    "warmup_epochs": 1,  # min(10, epochs / 10) of the reference, for 10 epochs
    "max_epochs_per_block": 1,  # the reference's 5 of 100 epochs would never reach the last block in 10
}
RECIPES: dict[str, dict[str, Any]] = {"demo": {}, "leap-paper": LEAP_PAPER_AT_DEMO_SCALE}
SUPERVISED: dict[str, dict[str, Any]] = {
    "CE": {"ce_weight": 1.0, "kd_weight": 0.0, "spectral_weight": 0.0},
    "CE + KD": {"ce_weight": 0.1, "kd_weight": 0.9, "spectral_weight": 0.0},
    "CE + KD + FFT": {"ce_weight": 0.1, "kd_weight": 0.9, "spectral_weight": 0.2},
}


def base_config(setting: Setting, seed: int, data: str) -> dict[str, Any]:
    cfg = setting.distill_config("fixed", seed, snapshots=False)
    return {**cfg, "data": data, "precision": "auto", "num_workers": "auto"}


def run(cfg: dict[str, Any], runs_dir: Path, name: str, fresh: bool) -> Path:
    run_dir = runs_dir / name
    if not fresh and _finished_run(run_dir, cfg):
        print(f"reusing {run_dir}", flush=True)
    else:
        print(f"running {name}", flush=True)
        distill(cfg, name=name, output_dir=str(runs_dir), overwrite=True, progress=False)
    return run_dir


def measure_recipes(setting: Setting, runs_dir: Path, fresh: bool) -> dict[str, Any]:
    """(a): fixed and leap under each recipe, on each dataset, every seed."""
    results: dict[str, Any] = {}
    for data in DATASETS:
        for recipe, keys in RECIPES.items():
            rows = []
            for seed in setting.seeds:
                for method in ("fixed", "leap"):
                    own = config_class(method).model_fields  # fixed has no curriculum keys
                    cfg = {**base_config(setting, seed, data), **{k: v for k, v in keys.items() if k in own},
                           "method": method}  # fmt: skip
                    run_dir = run(cfg, runs_dir, f"{data}-{recipe}-{method}-s{seed}", fresh)
                    row = evaluate_run(run_dir, setting, method)
                    row["precision"] = json.loads((run_dir / "summary.json").read_text())["precision"]
                    rows.append(row)
            results[f"{data} / {recipe}"] = {"runs": rows, "table": aggregate(rows, ("fixed", "leap"))}
    return results


def measure_supervised(setting: Setting, runs_dir: Path, fresh: bool) -> dict[str, Any]:
    """(b): the student's own top-1 with CE, CE + KD, CE + KD + FFT."""
    rows = []
    for seed in setting.seeds:
        for label, weights in SUPERVISED.items():
            cfg = {**base_config(setting, seed, "fashion-mnist"), "method": "spectralkd", "label_smoothing": 0.1,
                   "eval_images_per_class": setting.eval_val_per_class, **weights}  # fmt: skip
            name = f"supervised-{label.replace(' + ', '-').lower()}-s{seed}"
            s = json.loads((run(cfg, runs_dir, name, fresh) / "summary.json").read_text())
            scores = s["student_classification"]
            rows.append({"label": label, "seed": seed, "top1": scores["top1"], "top5": scores.get("top5"),
                         "wall_seconds": s["wall_seconds"], "training_flops": s["teacher_flops"] + s["student_flops"],
                         "precision": s["precision"]})  # fmt: skip
    table = {
        label: {key: mean_spread([r[key] for r in rows if r["label"] == label]) for key in ("top1", "wall_seconds")}
        for label in SUPERVISED
    }
    return {"runs": rows, "table": table, "val_images": setting.eval_val_per_class * 10}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: tiny runs, one seed")
    p.add_argument("--fresh", action="store_true", help="run everything again")
    p.add_argument("--out", type=Path, default=Path("docs"), help="writes OUT/benchmarks/recipes.json and the page")
    p.add_argument("--runs-dir", type=Path, default=None, help="run directories (default: runs/recipes[-quick])")
    args = p.parse_args(argv)
    setting = QUICK if args.quick else DEFAULT
    runs_dir = args.runs_dir or Path("runs") / ("recipes-quick" if args.quick else "recipes")
    assets = args.out / "benchmarks"
    assets.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = {
        "recipes": measure_recipes(setting, runs_dir, args.fresh),
        "supervised": measure_supervised(setting, runs_dir, args.fresh),
        "setting": {
            "seeds": list(setting.seeds),
            "image_size": setting.image_size,
            "epochs": setting.epochs,
            "subset_per_class": setting.subset_per_class,
            "batch_size": setting.batch_size,
            "steps": setting.steps,
            "eval_train_per_class": setting.eval_train_per_class,
            "eval_val_per_class": setting.eval_val_per_class,
        },  # fmt: skip
        "leap_paper_at_demo_scale": LEAP_PAPER_AT_DEMO_SCALE,
        "minutes": (time.perf_counter() - start) / 60,
        "machine": machine(),
        "commit": git_commit(),
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python bench/recipes.py" + (" --quick" if args.quick else ""),
    }
    path = assets / "recipes.json"
    path.write_text(json.dumps(results, indent=2, default=list) + "\n")
    if (assets / "results.json").is_file():
        print(f"written: {path} and {write_page(args.out)}")
    else:
        print(f"written: {path} (the page needs {assets / 'results.json'}: run bench/compare.py first)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
