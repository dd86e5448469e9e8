"""`nan_policy`: what a non-finite loss does, decided alike on every rank."""

from __future__ import annotations

import torch
from lightning.pytorch.strategies import Strategy
from lightning.pytorch.utilities import rank_zero_warn

from leapkd.errors import LeapkdError
from leapkd.methods import LossOutput


class NonFiniteLosses:
    """`stop`: raise with the parts that went bad; `skip`: drop the batch and count it."""

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.skipped_batches = 0

    def skip(self, strategy: Strategy, out: LossOutput, step: int) -> bool:
        """True when this batch must be skipped. Every rank takes the same decision (a rank
        that skipped a collective the others enter would hang them)."""
        if not strategy.reduce_boolean_decision(not bool(torch.isfinite(out.loss)), all=False):
            return False
        if self.policy == "stop":
            raise _non_finite(out, step)
        self.skipped_batches += 1
        rank_zero_warn(
            f"non-finite loss at step {step} (on at least one rank): batch skipped on every rank "
            f"({self.skipped_batches} so far)"
        )
        return True


def _non_finite(out: LossOutput, step: int) -> LeapkdError:
    bad = [k for k, v in out.parts.items() if not torch.isfinite(v)] or ["loss"]
    return LeapkdError(
        f"the loss is {out.loss.detach().item()} at step {step} (non-finite part: {', '.join(bad)}); "
        "the last good checkpoint is kept",
        "lower --lr, keep --grad_clip on, check the data for corrupt values, or pass --nan_policy skip",
    )
