"""A step's figures on the host: one collective over the ranks and one device-to-host
transfer, the only point where the host waits for the device in a training step."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch.strategies import ParallelStrategy, Strategy
from torch import Tensor

from leapkd.methods import LossOutput


@dataclass
class StepValues:
    """What the host needs of one optimizer step."""

    bad: bool  # a non-finite loss on some rank
    metric: float | None  # the progress metric, averaged over ranks (or this rank's)
    loss: float
    parts: dict[str, float]
    flags: dict[str, bool]  # the callbacks' step flags, raised on any rank


def step_values(
    strategy: Strategy,
    bad: Tensor,
    flags: dict[str, bool],
    out: LossOutput,
    metric: Tensor | float | None,
    metric_per_rank: bool = False,
) -> StepValues:
    """`bad` (1.0 when this rank's loss went non-finite), the `flags` callbacks raised on this
    rank and the `metric` of this rank (unless `metric_per_rank`) are combined over the ranks
    in one all-reduce (flags and `bad` come back averaged: > 0 means some rank raised them);
    then the loss, its parts and those go to the host in one transfer."""
    value = None if metric is None else torch.as_tensor(metric, device=bad.device).float()
    averaged = value is not None and not metric_per_rank
    shared = [bad] if value is None or not averaged else [bad, value]
    if getattr(strategy, "world_size", 1) > 1:
        asked = torch.tensor([float(v) for v in flags.values()]).to(bad.device, non_blocking=True)
        shared = list(strategy.reduce(torch.cat([torch.stack(shared), asked]), reduce_op="mean").unbind())
    names = list(out.parts)
    own = [value] if value is not None and not averaged else []
    local = [out.loss.float(), *(out.parts[k].float() for k in names), *own]
    host = torch.stack([*local, *shared]).double().tolist()
    loss, parts = host[0], dict(zip(names, host[1 : len(names) + 1]))
    bad_any, *rest = host[len(local) :]
    metric_value = host[len(local) - 1] if own else rest.pop(0) if averaged else None
    if rest:  # the flags, reduced
        flags = {name: v > 0 for name, v in zip(flags, rest)}
    return StepValues(bad=bad_any > 0, metric=metric_value, loss=loss, parts=parts, flags=flags)


def no_gradient_sync(strategy: Strategy) -> AbstractContextManager[Any]:
    """Under DDP, a backward that only accumulates (not the step's last micro-batch) keeps its
    gradients local; elsewhere nothing changes."""
    return strategy.block_backward_sync() if isinstance(strategy, ParallelStrategy) else nullcontext()
