"""Learning-rate schedule: linear warm-up + cosine, with optional restarts at level-up.

The multiplier at step t (applied to each group's peak LR) is
- warm-up, first segment only: (t + 1) / warmup_steps;
- then a cosine from the segment's peak `p` down to `min_lr_ratio` at `total_steps`:
  ``m + (p - m) * (1 + cos(pi * progress)) / 2``.

`restart(mode)` begins a new segment at the current step: its peak is 1 (`"peak"`: the
full peak LR again) or the global schedule's value at this step (`"envelope"`). During
warm-up a restart does nothing: warm-up always completes as a straight ramp (the LEAP
reference's `reset-after-warmup`). The segment's start and peak live in `state_dict()`,
so a resumed run continues exactly.
"""

from __future__ import annotations

import math
from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class WarmupCosine(LRScheduler):
    """Warm-up + cosine with restartable segments (see the module docstring)."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
    ) -> None:
        if total_steps < 1:
            raise ValueError("total_steps must be >= 1")
        self.total_steps = total_steps
        self.warmup_steps = min(warmup_steps, total_steps - 1)
        self.min_lr_ratio = min_lr_ratio
        self.segment_start: int | None = None  # None: still on the global schedule
        self.segment_peak = 1.0
        super().__init__(optimizer)

    def _cosine(self, step: int, start: int, peak: float) -> float:
        span = max(1, self.total_steps - start)
        progress = min(1.0, max(0.0, (step - start) / span))
        m = self.min_lr_ratio
        return m + (peak - m) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def envelope(self, step: int) -> float:
        """The multiplier of the schedule without restarts."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return self._cosine(step, self.warmup_steps, 1.0)

    def factor(self, step: int) -> float:
        """The multiplier at `step` under the current segment."""
        if self.segment_start is None:
            return self.envelope(step)
        return self._cosine(step, self.segment_start, self.segment_peak)

    def restart(self, mode: Literal["peak", "envelope"], step: int) -> bool:
        """Start a new cosine segment at `step` (the next step to be taken); False (and
        nothing changes) while `step` is still inside the warm-up."""
        if step < self.warmup_steps:
            return False
        self.segment_peak = 1.0 if mode == "peak" else self.envelope(step)
        self.segment_start = step
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        return True

    def get_lr(self) -> list[float]:  # type: ignore[override]  # narrower than torch's list[float | Tensor]; list is invariant
        f = self.factor(self.last_epoch)
        return [float(base) * f for base in self.base_lrs]
