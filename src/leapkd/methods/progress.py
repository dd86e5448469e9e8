"""The progress metric of a feature method: CKA (or cosine) between the projected student
tokens and the target, on a seeded subset of the batch when asked (docs/method.md, 1.3)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from leapkd.metrics import get_metric


class ProgressMetric:
    """`metric(projected, target)` in float32 without gradients; with `images` set, on that many
    images of the batch drawn from its own seeded generator (the same on every rank and after a
    resume: its state travels in the method's checkpointed extra state)."""

    def __init__(self, name: str, images: int | None, seed: int) -> None:
        self.fn = get_metric(name)
        self.images = images
        self.generator = torch.Generator().manual_seed(seed + 7919)

    @torch.no_grad()
    def __call__(self, projected: Tensor, target: Tensor) -> Tensor:
        if self.images is not None and self.images < projected.shape[0]:
            idx = torch.randperm(projected.shape[0], generator=self.generator)[: self.images]
            idx = idx.to(projected.device, non_blocking=True)
            projected, target = projected[idx], target[idx]
        return self.fn(projected.detach(), target.detach())

    def state(self) -> dict[str, Any]:
        return {"metric_generator": self.generator.get_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["metric_generator"])
