"""The hardware benchmark: what `precision: auto`, data workers and `compile` give here.

Usage:
  python bench/hardware.py                     # every part, about 2 hours on 2 cores
  python bench/hardware.py --part demo         # or quality, pipeline, compile (repeatable)
  python bench/hardware.py --quick             # smoke test of every part, a few minutes

Parts (each timed side by side in one process, the settings interleaved A, B, A, B, so
machine load drifts over both alike):
- demo: the default `leapkd distill` as it was (precision 32, no data workers) and as it is
  now (precision auto, workers auto), two rounds each;
- quality: `leap` and `fixed` in bf16-mixed and in fp32, 3 seeds, the method benchmark's
  setting (bench/compare.py), kNN and linear probe of the final students;
- pipeline: images/s of the training input pipeline alone (decode, random-resized crop,
  flip, uint8 batches) on a folder of real-size JPEGs, by number of workers;
- compile: seconds per training step with and without `compile: true`;
- scan: listing an ImageNet-1k-sized folder of unlabelled images (1,281,167 empty files
  in 1,000 folders): seconds, the list's memory, and the peak Python memory of the scan;
- evaluation: the default demo without and with `eval_every: 1 epoch` (kNN on 20 fixed
  images per class of each split), two rounds each: what watching a run costs.

Results go to <out>/benchmarks/hardware.json (each part merged in as it finishes) and the
page <out>/benchmarks.md is drawn again (bench/page.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import DEFAULT, QUICK, Setting, aggregate, evaluate_run, git_commit, machine  # noqa: E402
from page import write_page  # noqa: E402

from leapkd.data import build_dataset, load_builtin  # noqa: E402
from leapkd.data.sampling import seeded_loader  # noqa: E402
from leapkd.data.unlabeled import unlabelled_images  # noqa: E402
from leapkd.hardware import resolve_precision  # noqa: E402
from leapkd.rundir import read_metrics  # noqa: E402
from leapkd.training import distill  # noqa: E402

PARTS = ("demo", "quality", "pipeline", "compile", "scan", "evaluation")
OLD_DEFAULT = {"precision": "32", "num_workers": 0}  # the default before precision and workers were `auto`
PRECISIONS = {"fp32": "32", "bf16": "bf16-mixed"}
QUALITY_METHODS = ("fixed", "leap")


def interleaved(settings: dict[str, Any], rounds: int, run: Callable[[str, Any, int], dict[str, Any]]) -> list[dict]:
    """run(label, setting, round) for every setting, round after round (A, B, A, B)."""
    return [{"label": label, "round": r, **run(label, s, r)} for r in range(rounds) for label, s in settings.items()]


# ----- the default demo ---------------------------------------------------------------------------
def measure_demo(runs_dir: Path, quick: bool) -> dict[str, Any]:
    extra = {"max_steps": 10} if quick else {}
    settings = {"before (precision 32, 0 workers)": OLD_DEFAULT, "now (precision auto, workers auto)": {}}

    def run(label: str, overrides: dict[str, Any], r: int) -> dict[str, Any]:
        start = time.perf_counter()
        name = f"demo-{'old' if overrides else 'new'}-{r}"
        result = distill(name=name, output_dir=str(runs_dir), overwrite=True, progress=False, **overrides, **extra)
        s = result.summary.record()
        return {
            "total_seconds": time.perf_counter() - start,
            "wall_seconds": s["wall_seconds"],
            "steps": s["steps"],
            "precision": s["precision"],
            "num_workers": s["num_workers"],
        }

    rows = interleaved(settings, 1 if quick else 2, run)
    return {"rows": rows, "summary": _by_label(rows, ("wall_seconds", "total_seconds"))}


# ----- evaluation during training on the demo ------------------------------------------------------
def measure_evaluation(runs_dir: Path, assets: Path, quick: bool) -> dict[str, Any]:
    extra = {"max_steps": 10, "eval_every": 5} if quick else {"eval_every": "1 epoch"}
    settings = {"without evaluation": False, f"eval_every {extra['eval_every']}": True}

    def run(label: str, evaluated: bool, r: int) -> dict[str, Any]:
        start = time.perf_counter()
        overrides = {k: v for k, v in extra.items() if evaluated or k != "eval_every"}
        result = distill(name=f"demo-eval-{'on' if evaluated else 'off'}-{r}", output_dir=str(runs_dir),
                         overwrite=True, progress=False, **overrides)  # fmt: skip
        s = result.summary.record()
        evaluation = s.get("evaluation") or {}
        if evaluated and r == 0:  # the run the page's curve is read from
            shutil.copy(result.run_dir / "plots" / "evaluation.png", assets / "evaluation_during_training.png")
        return {
            "total_seconds": time.perf_counter() - start,
            "wall_seconds": s["wall_seconds"],
            "steps": s["steps"],
            "precision": s["precision"],
            "eval_seconds": evaluation.get("seconds", 0.0),
            "share_of_wall": evaluation.get("share_of_wall") or 0.0,
            "history": [
                {k: e[k] for k in ("step", "seconds", "knn_top1", "knn_top5")} for e in evaluation.get("history", [])
            ],  # fmt: skip
            "best": evaluation.get("best"),
            "run_dir": str(result.run_dir),
        }

    rows = interleaved(settings, 1 if quick else 2, run)
    return {
        "rows": rows,
        "summary": _by_label(rows, ("wall_seconds", "total_seconds", "eval_seconds", "share_of_wall")),
    }


# ----- quality in bf16 vs fp32 ----------------------------------------------------------------------
def measure_quality(setting: Setting, runs_dir: Path) -> dict[str, Any]:
    runs = []
    for seed in setting.seeds:
        for method in QUALITY_METHODS:
            for tag, precision in PRECISIONS.items():
                cfg = {**setting.distill_config(method, seed, snapshots=False), "precision": precision}
                name = f"{method}-{tag}-s{seed}"
                print(f"running {name}", flush=True)
                distill(cfg, name=name, output_dir=str(runs_dir), overwrite=True, progress=False)
                runs.append({**evaluate_run(runs_dir / name, setting, method), "precision": tag})
    tables = {tag: aggregate([r for r in runs if r["precision"] == tag], QUALITY_METHODS) for tag in PRECISIONS}
    differences = {}
    for method in QUALITY_METHODS:
        for key in ("knn_top1", "linear_top1", "wall_seconds"):
            pairs = [(_pick(runs, method, "bf16", s)[key], _pick(runs, method, "fp32", s)[key]) for s in setting.seeds]
            diffs = [b - f for b, f in pairs]
            spread = max(tables["bf16"][method][key][1] or 0.0, tables["fp32"][method][key][1] or 0.0)
            differences[f"{method}/{key}"] = {
                "mean_diff": statistics.mean(diffs),
                "per_seed": diffs,
                "spread": spread,
                "within_spread": abs(statistics.mean(diffs)) <= spread,
            }
    return {"setting": asdict(setting), "runs": runs, "tables": tables, "bf16_minus_fp32": differences}


def _pick(runs: list[dict[str, Any]], method: str, tag: str, seed: int) -> dict[str, Any]:
    return next(r for r in runs if r["method"] == method and r["precision"] == tag and r["seed"] == seed)


# ----- input pipeline -------------------------------------------------------------------------------
def real_size_jpegs(folder: Path, count: int) -> Path:
    """`count` 500x375 JPEGs (ImageNet's typical size, quality 90): Fashion-MNIST items
    upscaled over a colour gradient with noise, so they compress like photographs do."""
    images, _, _ = load_builtin("fashion-mnist", "train")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:375, 0:500]
    for i in range(count):
        item = Image.fromarray(images[i]).resize((375, 375), Image.BILINEAR)
        base = np.stack([xx * 255 // 500, yy * 255 // 375, np.full_like(xx, 40 * (i % 6))], -1)
        base[:, 62:437] = np.maximum(base[:, 62:437], np.asarray(item)[..., None])
        noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"img_{i:05d}.jpg", quality=90)
    return folder


def measure_pipeline(quick: bool) -> dict[str, Any]:
    count = 96 if quick else 1024
    with tempfile.TemporaryDirectory() as tmp:
        folder = real_size_jpegs(Path(tmp), count)
        mean_kb = sum(p.stat().st_size for p in folder.iterdir()) / count / 1024
        dataset = build_dataset(str(folder), "train", 224, augment=True, output="uint8")

        def run(label: str, workers: int, r: int) -> dict[str, Any]:
            loader = seeded_loader(dataset, seed=r, batch_size=32, num_workers=workers, rank=0, world_size=1)
            batches = iter(loader)
            next(batches)  # worker start-up and the first batch are not throughput
            start, seen = time.perf_counter(), 0
            for images, _ in batches:
                seen += images.shape[0]
            return {"images_per_second": seen / (time.perf_counter() - start), "images": seen}

        rows = interleaved({f"{w} workers": w for w in (0, 1, 2)}, 1 if quick else 2, run)
    return {
        "images": count,
        "mean_jpeg_kb": mean_kb,
        "size": "500x375",
        "image_size": 224,
        "batch_size": 32,
        "rows": rows,
        "summary": _by_label(rows, ("images_per_second",)),
    }


# ----- compile ----------------------------------------------------------------------------------------
def measure_compile(runs_dir: Path, quick: bool) -> dict[str, Any]:
    steps = 12 if quick else 40
    warm = 4 if quick else 10  # steps left out of the per-step time (compilation, caches)
    settings = {"eager": False, "compile": True}

    def run(label: str, compiled: bool, r: int) -> dict[str, Any]:
        name = f"compile-{label}-{r}"
        start = time.perf_counter()
        result = distill(
            name=name,
            output_dir=str(runs_dir),
            overwrite=True,
            progress=False,
            method="fixed",
            max_steps=steps,
            compile=compiled,
        )
        walls = [float(row["wall_seconds"]) for row in read_metrics(result.run_dir / "metrics.csv")]
        per_step = [b - a for a, b in zip(walls[warm:], walls[warm + 1 :])]
        return {
            "seconds_per_step": statistics.median(per_step),
            "first_step_seconds": walls[0],
            "total_seconds": time.perf_counter() - start,
            "precision": result.summary.precision,
        }

    rows = interleaved(settings, 1 if quick else 2, run)
    return {
        "steps": steps,
        "warm_up_steps": warm,
        "method": "fixed",
        "rows": rows,
        "summary": _by_label(rows, ("seconds_per_step", "first_step_seconds", "total_seconds")),
    }


# ----- scanning a big folder ---------------------------------------------------------------------------
def measure_scan(quick: bool) -> dict[str, Any]:
    folders, per_folder = (100, 200) if quick else (1000, 1282)
    count = folders * per_folder - (0 if quick else 833)  # ImageNet-1k's 1,281,167 training images
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        start = time.perf_counter()
        made = 0
        for f in range(folders):
            folder = root / f"n{f:08d}"
            folder.mkdir(parents=True)
            for i in range(min(per_folder, count - made)):
                (folder / f"n{f:08d}_{i}.JPEG").touch()
            made += min(per_folder, count - made)
        create_seconds = time.perf_counter() - start
        rounds = []
        for _ in range(1 if quick else 2):
            start = time.perf_counter()
            images = unlabelled_images(str(root))
            rounds.append(time.perf_counter() - start)
        assert len(images) == count
        start = time.perf_counter()
        images.save(Path(tmp) / "train-images.npz")
        saved = time.perf_counter() - start
        index_bytes = (Path(tmp) / "train-images.npz").stat().st_size
        tracemalloc.start()  # slows allocation down: a separate, untimed scan
        unlabelled_images(str(root))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return {
        "files": count,
        "folders": folders,
        "create_seconds": create_seconds,
        "scan_seconds": rounds,
        "list_bytes": images.nbytes,
        "index_file_bytes": index_bytes,
        "save_seconds": saved,
        "scan_peak_python_bytes": peak,
    }


def _by_label(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, dict[str, float]]:
    labels = dict.fromkeys(r["label"] for r in rows)
    return {label: {k: statistics.mean(r[k] for r in rows if r["label"] == label) for k in keys} for label in labels}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", action="append", choices=PARTS, help="run only these parts (default: all)")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny settings, one round")
    p.add_argument("--out", type=Path, default=Path("docs"), help="writes OUT/benchmarks/hardware.json and the page")
    p.add_argument("--runs-dir", type=Path, default=None, help="run directories (default: runs/hardware[-quick])")
    args = p.parse_args(argv)
    runs_dir = args.runs_dir or Path("runs") / ("hardware-quick" if args.quick else "hardware")
    assets = args.out / "benchmarks"
    assets.mkdir(parents=True, exist_ok=True)
    path = assets / "hardware.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    quality_setting = replace(QUICK, image_size=56) if args.quick else DEFAULT
    measure: dict[str, Callable[[], dict[str, Any]]] = {
        "demo": lambda: measure_demo(runs_dir, args.quick),
        "quality": lambda: measure_quality(quality_setting, runs_dir),
        "pipeline": lambda: measure_pipeline(args.quick),
        "compile": lambda: measure_compile(runs_dir, args.quick),
        "scan": lambda: measure_scan(args.quick),
        "evaluation": lambda: measure_evaluation(runs_dir, assets, args.quick),
    }
    auto_precision, why = resolve_precision("auto", "cpu")
    for part in args.part or PARTS:
        print(f"== {part}", flush=True)
        start = time.perf_counter()
        found = measure[part]()
        results[part] = {
            **found,
            "minutes": (time.perf_counter() - start) / 60,
            "machine": machine(),
            "commit": git_commit(),
            "auto_precision": auto_precision,
            "auto_reason": why,
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": "python bench/hardware.py" + (" --quick" if args.quick else "") + f" --part {part}",
        }
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(found.get("summary", found.get("bf16_minus_fp32")), indent=2), flush=True)
    if not (assets / "results.json").is_file():  # the page is drawn around the methods benchmark
        print(f"written: {path} (the page needs {assets / 'results.json'}: run bench/compare.py first)")
        return 0
    page = write_page(args.out)
    print(f"written: {path} and {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
