"""One timed `leapkd.distill` run of the GPU benchmark and the figures read from what it wrote.

Kept apart from the other parts (it imports only `leapkd.distill` and `read_metrics`), so the
sync-free comparison (bench/gpu.py part j) can run the very same measurement in a child
process against another leapkd source tree on PYTHONPATH.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import torch
from gpu_figures import gib, mfu, timed_window


def release_memory() -> None:
    """Drop what a finished (or failed) run left: Python garbage, then the CUDA cache."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def is_out_of_memory(err: BaseException) -> bool:
    seen: BaseException | None = err
    while seen is not None:  # Lightning may wrap the allocator's error
        if isinstance(seen, torch.cuda.OutOfMemoryError) or "out of memory" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def measure_run(kwargs: dict[str, Any], warmup: int, peak_flops: float | None) -> dict[str, Any]:
    """Run `leapkd.distill(**kwargs)` and return its figures, units in the key names.

    Seconds per step are read from metrics.csv's per-step `wall_seconds` after `warmup`
    steps; FLOPs per step from its cumulative `flops` column over the same steps; peak
    memory from summary.json and, as a check, from torch's allocator in this process."""
    from leapkd.rundir import read_metrics
    from leapkd.training import distill

    cuda = torch.cuda.is_available() and kwargs.get("accelerator", "auto") in ("auto", "gpu", "cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = distill(**kwargs)
    total = time.perf_counter() - start
    s = result.summary.record()  # the figures as summary.json holds them
    window = timed_window(read_metrics(result.run_dir / "metrics.csv"), warmup)
    per_step, flops = window["seconds_per_step"], window["flops_per_step"]
    batch = int(s.get("global_batch") or kwargs["batch_size"])
    peak_bytes = s.get("peak_memory_bytes")
    allocator = torch.cuda.max_memory_allocated() if cuda else None
    return {
        "run_dir": str(result.run_dir),
        "teacher": kwargs["teacher"],
        "student": kwargs["student"],
        "batch_size": batch,
        "image_size": kwargs["image_size"],
        "steps": s["steps"],
        **window,
        "images_per_second": batch / per_step if per_step > 0 else None,
        "tflop_per_step": flops / 1e12,
        "mfu": mfu(flops, per_step, peak_flops) if cuda else None,
        "peak_memory_gib": gib(peak_bytes if peak_bytes is not None else allocator),
        "peak_memory_gib_summary": gib(peak_bytes),
        "peak_memory_gib_allocator": gib(allocator),
        "precision": s.get("precision"),
        "precision_reason": s.get("precision_reason"),
        "teacher_dtype": s.get("teacher_dtype"),
        "num_workers": s.get("num_workers"),
        "training_loop_seconds": s.get("wall_seconds"),
        "teacher_seconds": s.get("teacher_seconds"),
        "student_seconds": s.get("student_seconds"),
        "metric_seconds": s.get("metric_seconds"),
        "whole_call_seconds": total,
        "summary_images_per_second": s.get("images_per_second"),
        "device": "cuda" if cuda else "cpu",
    }
