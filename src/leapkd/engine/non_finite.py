"""`nan_policy`: what a non-finite loss does, decided alike on every rank.

Each micro-batch's loss is checked on the device (no host transfer); the step's flag
travels with the step's other figures in its one collective and one transfer, and the
decision is taken there, before the optimizer step: a bad step never changes the weights.
"""

from __future__ import annotations

import math

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from leapkd.errors import LeapkdError


class NonFiniteLosses:
    """`stop`: raise with the parts that went bad; `skip`: drop the whole step and count it."""

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.skipped_batches = 0
        self._bad: Tensor | None = None

    def observe(self, loss: Tensor) -> None:
        """Note on the device whether this micro-batch's loss is non-finite."""
        bad = ~torch.isfinite(loss.detach())
        self._bad = bad if self._bad is None else self._bad | bad

    def take_flag(self) -> Tensor:
        """1.0 when a micro-batch of this step had a non-finite loss, else 0.0 (float32, on
        the device); starts the next step's flag."""
        assert self._bad is not None, "observe() the step's losses first"
        flag, self._bad = self._bad.float(), None
        return flag

    def skip(self, bad_on_any_rank: bool, loss: float, parts: dict[str, float], step: int) -> bool:
        """True when this step must be skipped. Every rank takes the same decision from the
        flag reduced over ranks (a rank that skipped a collective the others enter would
        hang them)."""
        if not bad_on_any_rank:
            return False
        if self.policy == "stop":
            raise _non_finite(loss, parts, step)
        self.skipped_batches += 1
        rank_zero_warn(
            f"non-finite loss at step {step} (on at least one rank): batch skipped on every rank "
            f"({self.skipped_batches} so far)"
        )
        return True


def _non_finite(loss: float, parts: dict[str, float], step: int) -> LeapkdError:
    bad = [k for k, v in parts.items() if not math.isfinite(v)] or ["loss"]
    return LeapkdError(
        f"the loss is {loss} at step {step} (non-finite part: {', '.join(bad)}); the last good checkpoint is kept",
        "lower `lr`, keep `grad_clip` on, check the data for corrupt values, or pass `nan_policy` skip",
    )
