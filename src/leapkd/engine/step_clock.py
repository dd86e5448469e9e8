"""Training wall time, and the seconds spent in the parts of the training step, measured
without stalling a GPU.

On the CPU a part is timed with `time.perf_counter`. On a CUDA device a part is
bracketed by two CUDA events recorded on the stream, and read later, once the step's
single host transfer has waited for the stream anyway: timing adds no synchronisation.
"""

from __future__ import annotations

import time

import torch

Mark = float | torch.cuda.Event


class StepClock:
    """Adds the duration of named parts to a `seconds` dict (on CUDA, when `settle` is called);
    its "wall" entry is the wall time of training across resumes."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds
        self.device = torch.device("cpu")
        self._pending: list[tuple[str, torch.cuda.Event, torch.cuda.Event, dict[str, float] | None]] = []
        self._wall_start = time.perf_counter()
        self._wall_before = 0.0

    def start_wall(self) -> None:
        """Training (re)starts now, after the wall seconds already in `seconds` (a resume's)."""
        self._wall_start = time.perf_counter()
        self._wall_before = self.seconds["wall"]

    def wall(self) -> float:
        """Training wall time so far, across resumes."""
        return self._wall_before + time.perf_counter() - self._wall_start

    def mark(self) -> Mark:
        """Now, in the device's order of work."""
        if self.device.type != "cuda":
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def add(self, part: str, start: Mark, end: Mark, also: dict[str, float] | None = None) -> None:
        """Charge the time between two marks to `part` (and to `part` of `also`: one student's seconds)."""
        if isinstance(start, float) and isinstance(end, float):
            self.seconds[part] += end - start
            if also is not None:
                also[part] += end - start
        elif isinstance(start, torch.cuda.Event) and isinstance(end, torch.cuda.Event):
            self._pending.append((part, start, end, also))
        else:
            raise TypeError("marks of one part come from one clock")

    def settle(self) -> None:
        """Add the parts timed with events (waits only for events the device has not reached)."""
        for part, start, end, also in self._pending:
            if not end.query():  # done already after the step's transfer
                end.synchronize()
            seconds = start.elapsed_time(end) / 1000.0
            self.seconds[part] += seconds
            if also is not None:
                also[part] += seconds
        self._pending.clear()
