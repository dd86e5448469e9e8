"""The measuring parts of the GPU benchmark (bench/gpu.py): tests, matrix peak, throughput,
early exit, engine overhead and compile. The input pipeline, the demo, eval/export parity and
the sync-free comparison are in bench/gpu_parts_io.py."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from dataclasses import fields, is_dataclass
from typing import Any

import torch
from gpu_figures import exit_depths, known_depth, median_or_none, pytest_counts, relative_error, saving_ratio
from gpu_run import is_out_of_memory, measure_run, release_memory
from gpu_setup import REPO, TEACHERS, Context


def child_env(ctx: Context) -> dict[str, str]:
    """The environment of a child process: leapkd's caches in the work folder, no network."""
    env = dict(os.environ, LEAPKD_CACHE=str(ctx.work / "cache"), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


# ----- a: the tests marked gpu ------------------------------------------------------------------
def part_tests(ctx: Context) -> dict[str, Any]:
    targets = [t for t in ctx.scale.pytest_targets if (REPO / t).exists()]
    if not targets:
        return {"status": "skipped", "note": f"none of {', '.join(ctx.scale.pytest_targets)} exists"}
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
           "--continue-on-collection-errors", *targets]  # fmt: skip
    timeout = max(10.0, min(120.0, ctx.budget.left() - 60))
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=child_env(ctx), capture_output=True, text=True, timeout=timeout)
        output, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        output, code = f"{err.stdout or ''}\n{err.stderr or ''}\ntimed out after {timeout:.0f} s", None
    counts = pytest_counts(output)
    return {
        "command": " ".join(["python", *cmd[1:]]),
        "returncode": code,
        **counts,
        "seconds": time.perf_counter() - start,
        "output_tail": output[-3000:],
        "status": "ok" if code in (0, 5) else "error",  # 5: no test selected
        **({} if code in (0, 5) else {"error": f"pytest exited with {code}: {counts['failed']} failed"}),
    }


# ----- b: the bf16 matrix-product peak ------------------------------------------------------------
def part_peak(ctx: Context) -> dict[str, Any]:
    n, repeats = ctx.scale.matmul_size, ctx.scale.matmul_repeats
    device = torch.device(ctx.accelerator)
    gen = torch.Generator(device=device).manual_seed(0)
    a = [torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen) for _ in range(2)]
    b = [torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen) for _ in range(2)]
    for i in range(3):  # warm-up: handles, clocks
        a[i % 2] @ b[i % 2]
    seconds = [_timed_matmul(a[i % 2], b[i % 2], ctx.cuda) for i in range(repeats)]
    flop = 2 * n**3
    median = statistics.median(seconds)
    ctx.peak_flops = flop / median
    return {
        "matrix_size": n,
        "dtype": "bfloat16",
        "repeats": repeats,
        "median_seconds": median,
        "tflops_median": flop / median / 1e12,
        "tflops_best": flop / min(seconds) / 1e12,
        "timer": "CUDA events" if ctx.cuda else "perf_counter",
    }


def _timed_matmul(a: torch.Tensor, b: torch.Tensor, cuda: bool) -> float:
    if not cuda:
        start = time.perf_counter()
        a @ b
        return time.perf_counter() - start
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    a @ b
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1000.0


# ----- c: throughput at the size users train at ---------------------------------------------------
def part_throughput(ctx: Context) -> dict[str, Any]:
    sc, rows, notes = ctx.scale, [], []
    for teacher, label in TEACHERS.items():
        if not ctx.budget.allows(45 if ctx.cuda else 2):
            notes.append(f"{label} batch {sc.batch_size}: skipped, {ctx.budget.left():.0f} s of the budget left")
            continue
        kwargs = ctx.run_kwargs(f"throughput-{label[4]}-{sc.batch_size}", teacher, sc.batch_size, sc.steps)
        rows.append({"label": label, "kind": "batch", **measure_run(kwargs, sc.warmup, ctx.peak_flops)})
        _print_row(rows[-1])
    for teacher, label in TEACHERS.items():
        largest = _largest_batch(ctx, teacher, label, notes)
        if largest is not None:
            rows.append(largest)
    plans = plan_estimates(ctx, rows[: sc.plan_rows])
    return {"rows": rows, "notes": notes, "plan": plans}


def _largest_batch(ctx: Context, teacher: str, label: str, notes: list[str]) -> dict[str, Any] | None:
    """The largest of the probe batches that trains (largest first; out-of-memory moves on)."""
    sc = ctx.scale
    for batch in sc.probe_batches:
        if not ctx.budget.allows(35 if ctx.cuda else 2):
            notes.append(f"{label}: largest batch not probed, {ctx.budget.left():.0f} s of the budget left")
            return None
        kwargs = ctx.run_kwargs(f"throughput-{label[4]}-{batch}", teacher, batch, sc.probe_steps)
        try:
            row = {"label": label, "kind": "largest batch", **measure_run(kwargs, sc.probe_warmup, ctx.peak_flops)}
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            notes.append(f"{label} batch {batch}: out of memory")
            release_memory()
            continue
        _print_row(row)
        return row
    notes.append(f"{label}: none of the batches {sc.probe_batches} fits")
    return None


def _print_row(row: dict[str, Any]) -> None:
    mfu = f"{100 * row['mfu']:.1f}%" if row.get("mfu") is not None else "-"
    label = row.get("label", row["teacher"])
    print(f"[gpu]   {label} batch {row['batch_size']}: {row['images_per_second']:.0f} img/s, "
          f"{row['seconds_per_step']:.4f} s/step, MFU {mfu}", flush=True)  # fmt: skip


def plan_estimates(ctx: Context, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`leapkd plan`'s estimate for the measured configurations, where leapkd.plan exists."""
    try:
        from leapkd import plan
    except ImportError as err:
        return {"status": "skipped", "note": f"leapkd.plan is not importable ({err})"}
    estimates = []
    for row in rows:
        entry: dict[str, Any] = {"label": row["label"], "batch_size": row["batch_size"]}
        try:
            values = {"teacher": row["teacher"], "student": row["student"], "image_size": row["image_size"],
                      "batch_size": row["batch_size"], "method": "fixed", "gpu": "h200", "gpus": 1,
                      "precision": "bf16-mixed"}  # fmt: skip
            names = set(plan.PlanRequest.model_fields)
            estimate = plan.estimate_plan(plan.PlanRequest(**{k: v for k, v in values.items() if k in names}))
            images = getattr(estimate, "images_per_second_per_gpu", None)
            memory = getattr(estimate, "memory_bytes", None)
            entry |= {
                "estimated_images_per_second": images,
                "measured_images_per_second": row["images_per_second"],
                "images_per_second_error": relative_error(images, row["images_per_second"]),
                "estimated_memory_gib": None if memory is None else memory / 1024**3,
                "measured_peak_memory_gib": row.get("peak_memory_gib"),
                "memory_error": relative_error(memory and memory / 1024**3, row.get("peak_memory_gib")),
                "estimated_largest_batch": getattr(estimate, "largest_batch", None),
                "estimated_mfu": getattr(estimate, "mfu", None),
                "estimate_mfu_basis": getattr(estimate, "mfu_basis", None),
            }
        except Exception as err:  # the plan module is being written beside this benchmark
            entry["error"] = f"{type(err).__name__}: {err}"
        estimates.append(entry)
    return {"status": "ok", "rows": estimates}


# ----- d: early exit --------------------------------------------------------------------------------
def part_early_exit(ctx: Context) -> dict[str, Any]:
    sc = ctx.scale
    teacher = list(TEACHERS)[-1]
    levels = known_depth(teacher, sc.teacher_kwargs.get(teacher))
    reuse = throughput_row(ctx, teacher, sc.batch_size)
    rows, notes = {}, []
    for depth in exit_depths(levels):
        if depth == levels and reuse is not None:
            rows[depth] = {**reuse, "from": "part c (the same run: the teacher's last block)"}
            continue
        if not ctx.budget.allows(30 if ctx.cuda else 2):
            notes.append(f"depth {depth}: skipped, {ctx.budget.left():.0f} s of the budget left")
            continue
        kwargs = ctx.run_kwargs(f"early-exit-{depth}", teacher, sc.batch_size, sc.steps, fixed_level=depth)
        rows[depth] = measure_run(kwargs, sc.warmup, ctx.peak_flops)
        print(f"[gpu]   depth {depth}/{levels}: {rows[depth]['seconds_per_step']:.4f} s/step", flush=True)
    table = []
    full = rows.get(levels)
    for depth, row in sorted(rows.items()):
        entry = {"depth": depth, "levels": levels, **{k: row[k] for k in ("seconds_per_step", "flops_per_step",
                 "tflop_per_step", "images_per_second", "mfu")}}  # fmt: skip
        if full is not None:
            t, f = row["seconds_per_step"] / full["seconds_per_step"], row["flops_per_step"] / full["flops_per_step"]
            entry |= {"time_relative": t, "flops_relative": f, "wall_saving": 1 - t, "flops_saving": 1 - f,
                      "wall_per_flops_saving": saving_ratio(row["seconds_per_step"], full["seconds_per_step"],
                                                            row["flops_per_step"], full["flops_per_step"])}  # fmt: skip
        table.append(entry)
    label = TEACHERS[teacher]
    return {"teacher": label, "batch_size": sc.batch_size, "levels": levels, "rows": table, "notes": notes}


def throughput_row(ctx: Context, teacher: str, batch: int) -> dict[str, Any] | None:
    part = ctx.results.get("parts", {}).get("throughput", {})
    for row in part.get("rows", []):
        if row["teacher"] == teacher and row["batch_size"] == batch and row["kind"] == "batch":
            return row
    return None


# ----- e: the engine against a bare PyTorch loop -------------------------------------------------------
def part_overhead(ctx: Context) -> dict[str, Any]:
    from overhead import BareLoop

    sc = ctx.scale
    teacher = list(TEACHERS)[0]
    levels = known_depth(teacher, sc.teacher_kwargs.get(teacher))
    engine: list[float] = []
    bare_times: list[float] = []
    bare = None
    for r in range(sc.rounds):  # A, B, A, B
        if r and not ctx.budget.allows(40 if ctx.cuda else 2):
            break
        kwargs = ctx.run_kwargs(f"overhead-engine-{r}", teacher, sc.batch_size, sc.steps)
        run = measure_run(kwargs, sc.warmup, ctx.peak_flops)
        engine.append(run["seconds_per_step"])
        if bare is None:
            bare = BareLoop(sc.image_size, sc.batch_size, None, int(run["num_workers"]), teacher=teacher,
                            student=sc.student, data=str(ctx.jpegs()), device=ctx.accelerator, precision="bf16-mixed",
                            teacher_kwargs=sc.teacher_kwargs.get(teacher))  # fmt: skip
        bare_times.append(bare.seconds_per_step(levels, sc.bare_steps, warmup=min(5, sc.warmup + 2)))
        print(f"[gpu]   round {r}: engine {engine[-1]:.4f} s/step, bare loop {bare_times[-1]:.4f} s/step", flush=True)
    del bare
    release_memory()
    by_round = [e / b - 1 for e, b in zip(engine, bare_times)]
    return {
        "teacher": TEACHERS[teacher],
        "batch_size": sc.batch_size,
        "precision": "bf16-mixed",
        "engine_seconds_per_step": engine,
        "bare_seconds_per_step": bare_times,
        "overhead_by_round": by_round,
        "overhead": median_or_none(by_round),
        "engine_median_seconds_per_step": median_or_none(engine),
        "bare_median_seconds_per_step": median_or_none(bare_times),
    }


# ----- f: compile against eager -----------------------------------------------------------------------
def part_compile(ctx: Context) -> dict[str, Any]:
    sc = ctx.scale
    teacher = list(TEACHERS)[0]
    eager = throughput_row(ctx, teacher, sc.batch_size)
    notes = []
    if eager is None:
        eager = measure_run(
            ctx.run_kwargs("compile-eager", teacher, sc.batch_size, sc.steps), sc.warmup, ctx.peak_flops
        )
    else:
        notes.append("eager: part c's run of the same configuration")
    kwargs = ctx.run_kwargs("compile", teacher, sc.batch_size, sc.compile_steps, compile=True)
    if ctx.cuda:
        compiled = measure_run(kwargs, sc.compile_warmup, ctx.peak_flops)
    else:  # the same path with dynamo switched off: compiling on 2 CPU cores takes minutes
        import torch._dynamo

        with torch._dynamo.config.patch(disable=True):
            compiled = measure_run(kwargs, sc.compile_warmup, ctx.peak_flops)
        notes.append("dry run: torch.compile's path with dynamo disabled (no compilation)")
    first = _first_steps_seconds(compiled)
    return {
        "teacher": TEACHERS[teacher],
        "batch_size": sc.batch_size,
        "eager_seconds_per_step": eager["seconds_per_step"],
        "compiled_seconds_per_step": compiled["seconds_per_step"],
        "speedup": eager["seconds_per_step"] / compiled["seconds_per_step"],
        "warmup_steps": compiled["warmup_steps"],
        "warmup_seconds": first,
        "compile_seconds": first - compiled["warmup_steps"] * compiled["seconds_per_step"],
        "eager_whole_call_seconds": eager["whole_call_seconds"],
        "compiled_whole_call_seconds": compiled["whole_call_seconds"],
        "compiled_images_per_second": compiled["images_per_second"],
        "compiled_mfu": compiled["mfu"],
        "notes": notes,
    }


def _first_steps_seconds(row: dict[str, Any]) -> float:
    """Training seconds up to the end of the warm-up (compilation happens in the first steps)."""
    from leapkd.rundir import read_metrics

    rows = read_metrics(f"{row['run_dir']}/metrics.csv")
    return float(rows[row["warmup_steps"] - 1]["wall_seconds"])


def jsonable(value: Any) -> Any:
    """Tensors, numpy scalars and dataclasses as JSON values."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value
