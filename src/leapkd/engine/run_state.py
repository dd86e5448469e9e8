"""The run's own state in a checkpoint (beside Lightning's loops, optimizer and callbacks):
the LR schedule, the seconds spent, the random generators and the position in the epoch."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from leapkd.schedule import WarmupCosine


def run_state(
    scheduler: WarmupCosine, seconds: dict[str, float], position: dict[str, int], device: torch.device
) -> dict[str, Any]:
    """What `restore_run_state` continues from, in types a `weights_only` load accepts."""
    return {
        "scheduler": scheduler.state_dict(),
        "seconds": dict(seconds),
        "rng": _get_rng_state(device),
        "position": position,
    }


def restore_run_state(
    state: dict[str, Any], scheduler: WarmupCosine, seconds: dict[str, float], device: torch.device
) -> None:
    """Continue the schedule (over the new run length: a resume may extend it), the seconds
    and the generators where the checkpoint left them."""
    total = scheduler.total_steps
    scheduler.load_state_dict(state["scheduler"])
    scheduler.total_steps = total
    for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_lr()):
        group["lr"] = lr
    seconds.update(state["seconds"])
    _set_rng_state(state["rng"], device)


def _get_rng_state(device: torch.device) -> dict[str, Any]:
    """Global RNG states; on a CUDA device its generator too (random erasing and drop path
    draw there)."""
    state = np.random.get_state(legacy=True)  # the default; numpy's stub types a bare call as a dict
    assert isinstance(state, tuple)  # the global generator is MT19937, whose legacy state is a tuple
    kind, keys, pos, has_gauss, gauss = state
    saved = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }
    if device.type == "cuda":
        saved["cuda"] = torch.cuda.get_rng_state(device)
    return saved


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
