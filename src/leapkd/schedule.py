"""Learning-rate schedule: linear warm-up + cosine, with optional restarts at level-up.

The multiplier at step t (applied to each group's peak LR) is
- warm-up, first segment only: (t + 1) / warmup_steps, or from `warmup_start` (a fraction
  of the peak): ``s + t * (1 - s) / warmup_steps`` (timm's form);
- then a cosine from the segment's peak `p` down to `min_lr_ratio` at `total_steps`:
  ``m + (p - m) * (1 + cos(pi * progress)) / 2``.

With `steps_per_epoch` the schedule moves once per epoch, as timm's `CosineLRScheduler`
stepped after each epoch with that epoch's index (DeiT's and SpectralKD's loop): epoch e
runs at the schedule's value for t = max(0, e - 1) epochs, the warm-up from `warmup_start`
over `warmup_steps` epochs, and the cosine spans all epochs from t = 0 (timm's
`warmup_prefix=False`). Restarts need the per-step schedule.

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
        warmup_start: float | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        if total_steps < 1:
            raise ValueError("total_steps must be >= 1")
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self.epochs = -(-total_steps // steps_per_epoch) if steps_per_epoch else None
        self.warmup_steps = min(warmup_steps, (self.epochs or total_steps) - 1)
        self.min_lr_ratio = min_lr_ratio
        self.warmup_start = warmup_start
        self.segment_start: int | None = None  # None: still on the global schedule
        self.segment_peak = 1.0
        super().__init__(optimizer)

    def _cosine(self, step: int, start: int, peak: float) -> float:
        span = max(1, self.total_steps - start)
        progress = min(1.0, max(0.0, (step - start) / span))
        m = self.min_lr_ratio
        return m + (peak - m) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _warmup(self, t: int) -> float:
        if self.warmup_start is None:
            return (t + 1) / self.warmup_steps
        return self.warmup_start + t * (1.0 - self.warmup_start) / self.warmup_steps

    def envelope(self, step: int) -> float:
        """The multiplier of the schedule without restarts."""
        if self.steps_per_epoch is not None and self.epochs is not None:
            t = max(0, step // self.steps_per_epoch - 1)
            if t < self.warmup_steps:
                return self._warmup(t)
            m = self.min_lr_ratio
            return m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t / self.epochs)))
        if step < self.warmup_steps:
            return self._warmup(step)
        return self._cosine(step, self.warmup_steps, 1.0)

    def factor(self, step: int) -> float:
        """The multiplier at `step` under the current segment."""
        if self.segment_start is None:
            return self.envelope(step)
        return self._cosine(step, self.segment_start, self.segment_peak)

    def restart(self, mode: Literal["peak", "envelope"], step: int) -> bool:
        """Start a new cosine segment at `step` (the next step to be taken); False (and
        nothing changes) while `step` is still inside the warm-up."""
        if self.steps_per_epoch is not None:
            raise ValueError("restarts need the per-step schedule")
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
