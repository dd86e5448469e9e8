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

`restart(mode, decided_at)` begins a new segment: its peak is 1 (`"peak"`: the full peak LR
again) or the global schedule's value there (`"envelope"`), and its cosine runs to the end
of training. During warm-up a restart does nothing: warm-up always completes. leapkd's
restarts (the default) start at the next step to be taken, which runs at the new peak: the
first step on a new target is also the first at the new LR. With `reference_restarts` (the
mode) the schedule is the LEAP reference's `_CurriculumLRState` under `LambdaLR` exactly (its
`--curriculum-lr-reset`, alone or with `--curriculum-lr-decay-peak`): the segment starts at
the step the level-up was decided in (`decided_at`), and the new LR first applies where the
reference's next `scheduler.step()` puts it (the step after an in-step decision; one step
later after an epoch-end one); the warm-up ramps from 0 (``t / warmup_steps``; none at all
with 0 warm-up steps, the reference's plain reset); the envelope is one cosine from step 0 to
the end that ignores the warm-up, and in "envelope" mode the first segment, after the
warm-up, already peaks at the envelope there. The segment's start and peak, and the old
multiplier a restart decided at an epoch end keeps for one more step, live in `state_dict()`,
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
        reference_restarts: Literal["peak", "envelope"] | None = None,
    ) -> None:
        if total_steps < 1:
            raise ValueError("total_steps must be >= 1")
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self.epochs = -(-total_steps // steps_per_epoch) if steps_per_epoch else None
        self.warmup_steps = min(warmup_steps, (self.epochs or total_steps) - 1)
        self.min_lr_ratio = min_lr_ratio
        self.warmup_start = warmup_start
        self.reference_restarts = reference_restarts
        self.segment_start: int | None = None  # None: still on the global schedule
        self.segment_peak = 1.0
        self.held: float | None = None  # the old multiplier of a reference restart not applied yet
        if reference_restarts is not None:  # the reference's first segment starts after the warm-up
            self.segment_start = self.warmup_steps
            self.segment_peak = 1.0 if reference_restarts == "peak" else self.envelope(self.warmup_steps)
        super().__init__(optimizer)

    def _cosine(self, step: int, start: int, peak: float) -> float:
        span = max(1, self.total_steps - start)
        progress = min(1.0, max(0.0, (step - start) / span))
        m = self.min_lr_ratio
        return m + (peak - m) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _warmup(self, t: int) -> float:
        if self.reference_restarts is not None:
            return t / self.warmup_steps
        if self.warmup_start is None:
            return (t + 1) / self.warmup_steps
        return self.warmup_start + t * (1.0 - self.warmup_start) / self.warmup_steps

    def envelope(self, step: int) -> float:
        """The multiplier of the schedule without restarts (with `reference_restarts`: one cosine
        from step 0, the warm-up ignored)."""
        if self.reference_restarts is not None:
            return self._cosine(step, 0, 1.0)
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
        if self.reference_restarts is not None and step < self.warmup_steps:
            return self._warmup(step)
        if self.segment_start is None:
            return self.envelope(step)
        return self._cosine(step, self.segment_start, self.segment_peak)

    def restart(self, mode: Literal["peak", "envelope"], decided_at: int) -> bool:
        """Start a new cosine segment for a level-up decided after `decided_at` optimizer steps
        (see the module docstring for where it starts and applies); False (and nothing changes)
        while that is still inside the warm-up."""
        if self.steps_per_epoch is not None:
            raise ValueError("restarts need the per-step schedule")
        reference = self.reference_restarts is not None
        start = decided_at if reference else self.last_epoch
        if start < self.warmup_steps:
            return False
        # the step at `start` still runs at the old multiplier when the reference applies it later
        self.held = self.factor(start) if reference and start == self.last_epoch else None
        self.segment_peak = 1.0 if mode == "peak" else self.envelope(start)
        self.segment_start = start
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):  # a held restart keeps the old LR
            group["lr"] = lr
        return True

    def get_lr(self) -> list[float]:  # type: ignore[override]  # narrower than torch's list[float | Tensor]; list is invariant
        f = (
            self.held
            if self.held is not None and self.last_epoch == self.segment_start
            else self.factor(self.last_epoch)
        )
        return [float(base) * f for base in self.base_lrs]
