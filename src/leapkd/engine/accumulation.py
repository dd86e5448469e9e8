"""Gradient accumulation: the micro-batches of one optimizer step, joined as one batch."""

from __future__ import annotations

import dataclasses
from typing import Any

import lightning as L
import torch

from leapkd.config import DistillConfig
from leapkd.methods import LossOutput, TeacherPass
from leapkd.models import Features


class MicroBatches:
    """Keeps what the progress metric may read of the batches accumulated into one optimizer
    step: the detached loss and parts, what the method saved for it and every field of its
    teacher pass (the feature methods': patch and CLS tokens, spectral maps, logits, levels),
    joined along the batch at the end."""

    def __init__(self, per_step: int) -> None:
        self.per_step = per_step
        self._group: list[tuple[LossOutput, TeacherPass]] = []

    def add(self, out: LossOutput, targets: TeacherPass) -> bool:
        """Keep one micro-batch; True when the step has all of them."""
        saved = {key: value.detach() for key, value in out.saved.items()}
        self._group.append((LossOutput(out.loss.detach(), out.parts, saved), targets))
        return len(self._group) >= self.per_step

    def __len__(self) -> int:
        return len(self._group)

    def clear(self) -> None:
        self._group.clear()

    def joined(self) -> tuple[LossOutput, TeacherPass]:
        """The step's loss (the mean over its micro-batches), what the method saved and its
        teacher passes joined along the batch, so the progress metric sees what one big batch would give."""
        if len(self._group) == 1:
            return self._group[0]
        outs = [o for o, _ in self._group]
        targets = [t for _, t in self._group]
        loss = torch.stack([o.loss for o in outs]).mean()
        parts = {k: torch.stack([o.parts[k] for o in outs]).mean() for k in outs[0].parts}
        saved = _join([o.saved for o in outs])
        fields = {f.name: _join([getattr(t, f.name) for t in targets]) for f in dataclasses.fields(targets[0])}
        return LossOutput(loss, parts, saved), dataclasses.replace(targets[0], **fields)


def _join(values: list[Any]) -> Any:
    """One field of the micro-batches' targets as one batch's: tensors and features joined along
    the batch, dicts key by key; anything else (depth, grid) is the same in every micro-batch."""
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(values)
    if isinstance(first, Features):
        prefix = None if first.prefix is None else torch.cat([v.prefix for v in values])
        return Features(torch.cat([v.patches for v in values]), first.grid, prefix)
    if isinstance(first, dict):
        return {key: _join([v[key] for v in values]) for key in first}
    return first


def global_batch(cfg: DistillConfig, world_size: int) -> int:
    """Images per optimizer step over all ranks."""
    return cfg.batch_size * cfg.accumulate_grad_batches * world_size


def optimizer_steps(trainer: L.Trainer, per_step: int) -> int:
    """Optimizer steps a run will take (Lightning's estimate counts batches: with manual
    optimisation it does not know that `per_step` of them make a step)."""
    steps = int(trainer.max_epochs or 1) * (int(trainer.num_training_batches) // per_step)
    return min(steps, trainer.max_steps) if trainer.max_steps != -1 else steps


def warmup_steps(trainer: L.Trainer, cfg: DistillConfig) -> int:
    """Linear warm-up in optimizer steps: `warmup_steps`, or `warmup_epochs` epochs of steps when set."""
    if cfg.warmup_epochs is None:
        return cfg.warmup_steps
    return round(cfg.warmup_epochs * (int(trainer.num_training_batches) // cfg.accumulate_grad_batches))
