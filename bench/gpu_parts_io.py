"""The GPU benchmark's parts around the training step (bench/gpu.py): the input pipeline alone,
the README's demo as a command, eval/export on the device with their CPU parity, and the
sync-free comparison against another leapkd source tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from gpu_parts import child_env, throughput_row
from gpu_setup import DEMO_TEACHER, REPO, TEACHERS, Context

CHILD_MARK = "GPU_CHILD_RESULT "


# ----- g: the input pipeline alone ---------------------------------------------------------------
def part_pipeline(ctx: Context) -> dict[str, Any]:
    from leapkd.data import build_dataset
    from leapkd.data.sampling import seeded_loader

    sc = ctx.scale
    dataset = build_dataset(str(ctx.jpegs()), "train", sc.image_size, augment=True, output="uint8")
    rows, notes = [], []
    for workers in sc.pipeline_workers:
        if not ctx.budget.allows(sc.pipeline_seconds + 10 if ctx.cuda else 1):
            notes.append(f"{workers} workers: skipped, {ctx.budget.left():.0f} s of the budget left")
            continue
        loader = seeded_loader(dataset, 0, sc.batch_size, workers, rank=0, world_size=1, pin_memory=ctx.cuda)
        rows.append({"workers": workers, **_drain(loader, sc.pipeline_seconds)})
        print(f"[gpu]   {workers} workers: {rows[-1]['images_per_second']:.0f} img/s", flush=True)
        del loader
    return {
        "image_size": sc.image_size,
        "batch_size": sc.batch_size,
        "pin_memory": ctx.cuda,
        "transform": "the training transform (decode, random-resized crop, flip) to uint8; normalised on the device",
        "rows": rows,
        "vs_training": _against_training(ctx, rows),
        "notes": notes,
    }


def _against_training(ctx: Context, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each throughput run's images/s beside the loader's alone with as many workers (when measured)."""
    alone = {r["workers"]: r["images_per_second"] for r in rows}
    out = []
    for run in ctx.results.get("parts", {}).get("throughput", {}).get("rows", []):
        loader = alone.get(run["num_workers"])
        out.append({"label": run["label"], "batch_size": run["batch_size"], "workers": run["num_workers"],
                    "training_images_per_second": run["images_per_second"], "loader_images_per_second": loader,
                    "training_over_loader": None if not loader else run["images_per_second"] / loader})  # fmt: skip
    return out


def _drain(loader: Any, seconds: float) -> dict[str, Any]:
    """Images per second over `seconds` after the first batch (worker start-up is not throughput);
    epochs are chained with the same (persistent) workers."""
    batches = iter(loader)
    next(batches)
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            continue
        images += batch[0].shape[0]
    elapsed = time.perf_counter() - start
    return {"images": images, "seconds": elapsed, "images_per_second": images / elapsed}


# ----- h: the README's default `leapkd distill` ----------------------------------------------------------
def part_demo(ctx: Context) -> dict[str, Any]:
    data_root = ["--data_root", ctx.fmnist_root] if ctx.fmnist_root else []
    cmd = [sys.executable, "-m", "leapkd", "distill", "--teacher", DEMO_TEACHER, "--allow_random_teacher", "true",
           "--output_dir", str(ctx.runs), "--name", "demo", "--overwrite", "--no-progress",
           *data_root, *ctx.scale.demo_args]  # fmt: skip
    timeout = max(10.0, min(300.0, ctx.budget.left() - 30))
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=child_env(ctx), capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    shown = " ".join(["leapkd", *cmd[3:]])
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-2000:]
        return {"status": "error", "command": shown, "error": f"exit {proc.returncode}: {tail}"}
    run_dir = ctx.runs / "demo"
    s = json.loads((run_dir / "summary.json").read_text())
    ctx.results["demo_run"] = str(run_dir)
    peak = s.get("peak_memory_bytes")
    return {
        "command": shown,
        "teacher": f"{DEMO_TEACHER} at random init (the embedded teacher's architecture; its weights do not travel)",
        "data": "fashion-mnist" + (f" (files from {ctx.fmnist_root})" if ctx.fmnist_root else ""),
        "whole_command_seconds": seconds,
        "training_loop_seconds": s.get("wall_seconds"),
        "images_per_second": s.get("images_per_second"),
        "steps": s.get("steps"),
        "batch_size": s.get("batch_size"),
        "precision": s.get("precision"),
        "precision_reason": s.get("precision_reason"),
        "teacher_dtype": s.get("teacher_dtype"),
        "num_workers": s.get("num_workers"),
        "method": s.get("method"),
        "final_block": s.get("final_block"),
        "flops_saving": s.get("flops_saving"),
        "peak_memory_gib": None if peak is None else peak / 1024**3,
        "output_tail": (proc.stdout + proc.stderr)[-1500:],
    }


# ----- i: eval and export of the demo's student, parity with the CPU -------------------------------------
def part_eval_export(ctx: Context) -> dict[str, Any]:
    run = ctx.results.get("demo_run")
    if run is None:
        return {"status": "skipped", "note": "needs part h's run (the demo's student)"}
    return {"knn": _knn_both(ctx, run), "features": _feature_parity(ctx, run), "onnx": _onnx_parity(ctx, run)}


def _knn_both(ctx: Context, run: str) -> dict[str, Any]:
    """`leapkd eval --protocols knn` of the run on the device and on the CPU (separate feature caches)."""
    from leapkd import evaluate

    train, val = ctx.scale.eval_per_class
    out: dict[str, Any] = {"train_per_class": train, "val_per_class": val}
    for device in dict.fromkeys((ctx.accelerator, "cpu")):
        before = os.environ.get("LEAPKD_CACHE")
        os.environ["LEAPKD_CACHE"] = str(ctx.work / f"eval-cache-{device}")
        start = time.perf_counter()
        try:
            r = evaluate(run, protocols=("knn",), accelerator=device, train_per_class=train, val_per_class=val,
                         data_root=ctx.fmnist_root, out_dir=str(ctx.work / f"eval-{device}"), progress=False,
                         num_workers=ctx.scale.num_workers)  # fmt: skip
        finally:
            if before is None:
                os.environ.pop("LEAPKD_CACHE", None)
            else:
                os.environ["LEAPKD_CACHE"] = before
        out[device] = {
            **{k: v for k, v in r["knn"].items() if k.startswith("top")},
            "seconds": time.perf_counter() - start,
        }
    if ctx.cuda:
        out["top1_difference"] = out["cuda"].get("top1", 0.0) - out["cpu"].get("top1", 0.0)
    return out


def _parity_images(ctx: Context, size: int) -> torch.Tensor:
    from leapkd.data import build_dataset

    data = build_dataset("fashion-mnist", "val", size, augment=False, root=ctx.fmnist_root)
    return torch.stack([data[i][0] for i in range(ctx.scale.parity_images)])


def _compare(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    a, b = a.double().flatten(1), b.double().flatten(1)
    return {
        "max_abs_diff": float((a - b).abs().max()),
        "relative_l2": float((a - b).norm() / b.norm()),
        "min_cosine": float(F.cosine_similarity(a, b, dim=1).min()),
    }


def _feature_parity(ctx: Context, run: str) -> dict[str, Any]:
    """The student's output tokens on the device (fp32, TF32 on and off) against the CPU's."""
    from leapkd.models import load_student_file

    model = load_student_file(Path(run) / "student.safetensors").eval()
    images = _parity_images(ctx, model.image_size)
    with torch.no_grad():
        reference = model(images)
        model.to(ctx.accelerator)
        out: dict[str, Any] = {"images": len(images)}
        before = torch.get_float32_matmul_precision()
        for precision in ("highest", "high"):
            torch.set_float32_matmul_precision(precision)
            out[f"fp32_matmul_{precision}"] = _compare(model(images.to(ctx.accelerator)).cpu(), reference)
        torch.set_float32_matmul_precision(before)
        with torch.autocast(ctx.accelerator, dtype=torch.bfloat16):
            out["bf16_autocast"] = _compare(model(images.to(ctx.accelerator)).float().cpu(), reference)
    return out


def _onnx_parity(ctx: Context, run: str) -> dict[str, Any]:
    """`leapkd export --format onnx` of the run, then onnxruntime's output against torch's on the device."""
    import onnxruntime as ort

    from leapkd import export
    from leapkd.models import load_student_file

    start = time.perf_counter()
    result = export(run, "onnx", out_dir=str(ctx.work / "export"))
    seconds = time.perf_counter() - start
    onnx_file = next(f for f in result["files"] if str(f).endswith(".onnx"))
    model = load_student_file(Path(run) / "student.safetensors").eval().to(ctx.accelerator)
    images = _parity_images(ctx, model.image_size)
    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    session = ort.InferenceSession(onnx_file, providers=providers)
    ours = session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    with torch.no_grad():
        torch_out = model(images.to(ctx.accelerator)).cpu()
    torch.set_float32_matmul_precision(before)
    checks = {k: v for k, v in result.items() if k not in ("files", "card", "run_dir")}
    return {
        "export_seconds": seconds,
        "onnx_bytes": os.path.getsize(onnx_file),
        "providers": session.get_providers(),
        "export_result": checks,
        "onnx_vs_torch_on_device": _compare(torch.from_numpy(ours), torch_out),
    }


# ----- j: the sync-free step against another source tree --------------------------------------------------
def baseline_env(ctx: Context, src: str) -> dict[str, str]:
    """The child's environment: `src` first on PYTHONPATH, this tree's src/ left out."""
    here = os.path.realpath(REPO / "src")
    kept = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.realpath(p) != here]
    return {**child_env(ctx), "PYTHONPATH": os.pathsep.join([str(Path(src).resolve()), *kept])}


def part_baseline(ctx: Context) -> dict[str, Any]:
    if not ctx.baseline_src:
        return {"status": "skipped", "note": "no --baseline-src given"}
    sc = ctx.scale
    teacher = list(TEACHERS)[0]
    spec = {"kwargs": ctx.run_kwargs("baseline", teacher, sc.batch_size, sc.steps), "warmup": sc.warmup,
            "peak_flops": ctx.peak_flops}  # fmt: skip
    cmd = [sys.executable, str(REPO / "bench" / "gpu.py"), "--child-run", json.dumps(spec)]
    timeout = max(10.0, min(240.0, ctx.budget.left() - 20))
    proc = subprocess.run(cmd, cwd=REPO, env=baseline_env(ctx, ctx.baseline_src), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    line = next((x for x in proc.stdout.splitlines() if x.startswith(CHILD_MARK)), None)
    if proc.returncode != 0 or line is None:
        return {"status": "error", "error": f"exit {proc.returncode}: {(proc.stdout + proc.stderr)[-2000:]}"}
    old = json.loads(line[len(CHILD_MARK) :])
    new = throughput_row(ctx, teacher, sc.batch_size)
    if new is None:
        from gpu_run import measure_run

        new = measure_run(ctx.run_kwargs("baseline-new", teacher, sc.batch_size, sc.steps), sc.warmup, ctx.peak_flops)
    return {
        "teacher": TEACHERS[teacher],
        "batch_size": sc.batch_size,
        "baseline_src": ctx.baseline_src,
        "baseline_leapkd_file": old.get("leapkd_file"),
        "old_images_per_second": old["images_per_second"],
        "new_images_per_second": new["images_per_second"],
        "old_seconds_per_step": old["seconds_per_step"],
        "new_seconds_per_step": new["seconds_per_step"],
        "speedup": old["seconds_per_step"] / new["seconds_per_step"],
    }


def child_run(spec_text: str) -> None:
    """The baseline child: one measured run with whatever leapkd PYTHONPATH gives, as one JSON line."""
    from gpu_run import measure_run

    import leapkd

    spec = json.loads(spec_text)
    row = measure_run(spec["kwargs"], spec["warmup"], spec.get("peak_flops"))
    print(CHILD_MARK + json.dumps({**row, "leapkd_file": leapkd.__file__}), flush=True)
