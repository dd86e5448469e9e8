"""Pure helpers of the GPU benchmark (bench/gpu.py): the figures computed from what a run wrote.

No torch, no leapkd: these are unit-tested on fixed numbers (tests/test_gpu_bench.py).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

GIB = 1024**3


def mfu(flops_per_step: float | None, seconds_per_step: float | None, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation: counted FLOPs per step / seconds per step / the measured peak
    (FLOP/s). None when a figure is missing or not positive."""
    if not flops_per_step or not seconds_per_step or not peak_flops:
        return None
    if flops_per_step <= 0 or seconds_per_step <= 0 or peak_flops <= 0:
        return None
    return flops_per_step / seconds_per_step / peak_flops


def timed_window(rows: Sequence[Mapping[str, Any]], warmup: int) -> dict[str, Any]:
    """Per-step time and FLOPs from metrics.csv rows (cumulative `wall_seconds` and `flops`),
    over the steps after the first `warmup` ones: (last - row[warmup - 1]) / steps.

    A run shorter than warm-up + 2 steps keeps at least its last step in the window."""
    n = len(rows)
    if n < 2:
        raise ValueError(f"a timed window needs at least 2 steps, the run has {n}")
    warm = max(1, min(warmup, n - 1))
    start, end = rows[warm - 1], rows[-1]
    steps = n - warm
    seconds = (float(end["wall_seconds"]) - float(start["wall_seconds"])) / steps
    flops = (float(end["flops"]) - float(start["flops"])) / steps
    return {"warmup_steps": warm, "timed_steps": steps, "seconds_per_step": seconds, "flops_per_step": flops}


def saving_ratio(seconds: float, seconds_full: float, flops: float, flops_full: float) -> float | None:
    """Wall saving over FLOPs saving of a shallower teacher against the full one (None at full depth)."""
    flop_saving = 1 - flops / flops_full
    if flop_saving <= 1e-9:
        return None
    return (1 - seconds / seconds_full) / flop_saving


def relative_error(estimate: float | None, measured: float | None) -> float | None:
    """estimate / measured - 1 (None when either is missing)."""
    if estimate is None or not measured:
        return None
    return estimate / measured - 1


PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed|warnings?)")


def pytest_counts(output: str) -> dict[str, int]:
    """passed / failed / skipped / deselected / error counts from pytest's last summary line."""
    counts = {"passed": 0, "failed": 0, "skipped": 0, "deselected": 0, "error": 0}
    lines = [line for line in output.strip().splitlines() if line.strip()]
    summary = next((line for line in reversed(lines) if PYTEST_COUNT.search(line) or "no tests ran" in line), "")
    for number, word in PYTEST_COUNT.findall(summary):
        key = "error" if word.startswith("error") else word
        if key in counts:
            counts[key] = int(number)
    return counts


def median_or_none(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def gib(value: float | None) -> float | None:
    return None if value is None else value / GIB


def known_depth(teacher: str, kwargs: Mapping[str, Any] | None = None) -> int:
    """Blocks of a DINOv2 ViT teacher by its timm name (`depth` in its kwargs wins)."""
    if kwargs and "depth" in kwargs:
        return int(kwargs["depth"])
    for size, depth in (("small", 12), ("base", 12), ("large", 24), ("giant", 40)):
        if f"_{size}_" in teacher:
            return depth
    raise ValueError(f"unknown depth of {teacher}: give teacher_kwargs with depth")


def exit_depths(levels: int) -> list[int]:
    """L/4, L/2, 3L/4 and L (distinct, at least 1)."""
    return sorted({max(1, round(levels * q)) for q in (0.25, 0.5, 0.75, 1.0)})
