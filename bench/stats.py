"""The benchmarks' two statistics: mean and spread over seeds, and when a difference counts."""

from __future__ import annotations

import statistics


def mean_spread(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def verdict(diff: float, spread: float | None) -> str:
    """A difference counts only when it is larger than the seeds' spread."""
    if spread is None:
        return "one seed: untested"
    if abs(diff) <= spread:
        return "no difference"
    return "better" if diff > 0 else "worse"
