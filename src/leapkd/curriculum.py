"""The LEAP curriculum controller: which teacher block is the current target (pure logic).

Blocks are numbered 1..L. The controller smooths the per-step progress metric with an
EMA (reset to 0 at the start of every block) and moves the target one block deeper when
the EMA reaches the threshold or the block has used up its epoch budget:

- `observe(metric)` after every training step: EMA update, then the level-up check;
- `end_epoch()` at every epoch end: ``epochs_on_block += 1``, then the level-up check.

Level-up check: if ``block < L`` and (``ema >= threshold`` or
``epochs_on_block >= max_epochs_per_block``) then ``block += 1``, ``ema = 0``,
``epochs_on_block = 0``; at most one level per check.

Snap to last (``snap_to_last = s``): whenever the block becomes >= s, either because a
level-up landed on it or because `start`/`calibrate` chose it, the block jumps straight
to L in the same call (recorded as a separate 'snap' event). It is not re-applied by
`load_state_dict`.

Steps are counted by `observe`. An event's ``step`` is the number of steps observed when
it happened, i.e. the 0-based index of the first training step on the new block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, SupportsFloat

from annotated_types import Interval

from leapkd.errors import LeapkdError

Reason = Literal["threshold", "epoch_cap", "snap"]
_REASONS: tuple[str, ...] = ("threshold", "epoch_cap", "snap")
_STATE_VERSION = 1

__all__ = ["Curriculum", "CurriculumConfig", "LevelUp"]


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# The curriculum's defaults (leapkd's LEAP runs) and limits: the one source of both, read by
# `CurriculumConfig` here and by the `leap` method's configuration keys (`methods/leap.py`).
THRESHOLD, ALPHA, MAX_EPOCHS_PER_BLOCK = 0.85, 1.0, 1
LIMITS: dict[str, Interval] = {
    "threshold": Interval(gt=0, le=1),
    "alpha": Interval(gt=0, le=1),
    "max_epochs_per_block": Interval(ge=1),
}


@dataclass(frozen=True)
class CurriculumConfig:
    """Settings of the LEAP controller; validated on construction (LeapkdError naming the key).

    num_blocks: L, the teacher's number of blocks (>= 1).
    threshold: EMA level at which the target moves one block deeper, in (0, 1].
    alpha: EMA weight of the newest metric, in (0, 1]; 1 means no smoothing (paper).
    max_epochs_per_block: epoch budget of one block (>= 1).
    snap_to_last: block s in 1..L; once the block is >= s it jumps to L. None: off.
    """

    num_blocks: int
    threshold: float = THRESHOLD
    alpha: float = ALPHA
    max_epochs_per_block: int = MAX_EPOCHS_PER_BLOCK
    snap_to_last: int | None = None

    def __post_init__(self) -> None:
        def bad(key: str, need: str, value: object) -> LeapkdError:
            return LeapkdError(f"curriculum setting {key!r} must be {need}, got {value!r}", fix=f"set {key} to {need}")

        if not _is_int(self.num_blocks) or self.num_blocks < 1:
            raise bad("num_blocks", "an integer >= 1", self.num_blocks)
        for key, limits in LIMITS.items():
            value = getattr(self, key)
            integer = key == "max_epochs_per_block"
            if not (_is_int(value) if integer else _is_real(value)) or not _within(value, limits):
                raise bad(key, _describe(limits, integer), value)
        s = self.snap_to_last
        if s is not None and (not _is_int(s) or not 1 <= s <= self.num_blocks):
            raise bad("snap_to_last", f"None or an integer in 1..{self.num_blocks} (num_blocks)", s)


def _within(value: float, limits: Interval) -> bool:
    """Whether `value` lies within `limits`; NaN never does."""

    def bound(name: str, default: float) -> float:
        given = getattr(limits, name)
        return default if given is None else float(given)

    return (
        value > bound("gt", -math.inf)
        and value >= bound("ge", -math.inf)
        and value < bound("lt", math.inf)
        and value <= bound("le", math.inf)
    )


def _describe(limits: Interval, integer: bool) -> str:
    if limits.gt is not None and limits.le is not None:
        return f"a number in ({limits.gt}, {limits.le}]"
    bounds = [
        f"{sign} {getattr(limits, k)}"
        for k, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
        if getattr(limits, k) is not None
    ]
    return f"{'an integer' if integer else 'a number'} {' and '.join(bounds)}"


@dataclass(frozen=True)
class LevelUp:
    """One change of the target block: at `step`, from `from_block` to `to_block`, because of `reason`."""

    step: int
    from_block: int
    to_block: int
    reason: Reason


@dataclass
class Curriculum:
    """LEAP controller state and rules (see the module docstring). Starts at block 1."""

    config: CurriculumConfig
    block: int = field(default=1, init=False)
    start_block: int = field(default=1, init=False)
    ema: float = field(default=0.0, init=False)
    epochs_on_block: int = field(default=0, init=False)
    steps: int = field(default=0, init=False)
    last_ema: float = field(default=0.0, init=False)  # the EMA the last observe() checked
    events: list[LevelUp] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.config, CurriculumConfig):
            raise TypeError(f"config must be a CurriculumConfig, got {type(self.config).__name__}")

    @property
    def num_blocks(self) -> int:
        """L, the teacher's number of blocks."""
        return self.config.num_blocks

    @property
    def at_last(self) -> bool:
        """Whether the target is the teacher's last block."""
        return self.block == self.num_blocks

    @property
    def level_up_steps(self) -> list[int]:
        """Ascending distinct steps at which the block changed (for an LR scheduler)."""
        return sorted({e.step for e in self.events})

    def start(self, block: int) -> None:
        """Set the starting block (1..L), reset EMA and epoch count, then apply snap-to-last."""
        self._check_block(block)
        self.block = self.start_block = block
        self.ema = 0.0
        self.epochs_on_block = 0
        self._maybe_snap()

    def calibrate(self, scores: Sequence[float]) -> int:
        """Start at the block with the highest score (scores[i] is block i+1); returns that block.

        Ties go to the shallowest block; NaN scores are ignored. The returned block is the
        arg-max itself; the current block may be L if snap-to-last applies.
        """
        if len(scores) != self.num_blocks:
            raise LeapkdError(
                f"calibration got {len(scores)} scores for a teacher with {self.num_blocks} blocks",
                fix="compute the metric once for every teacher block 1..L",
            )
        best: int | None = None
        for i, score in enumerate(map(float, scores)):
            if not math.isnan(score) and (best is None or score > float(scores[best])):
                best = i
        if best is None:
            raise LeapkdError(
                "every calibration score is NaN",
                fix="check that the teacher and the student produce finite features on the first batch",
            )
        self.start(best + 1)
        return best + 1

    def observe(self, metric: SupportsFloat) -> bool:
        """Count a training step and fold its metric into the EMA; True if the block changed."""
        value = float(metric)
        if not math.isfinite(value):
            raise LeapkdError(
                f"the progress metric is {value} at step {self.steps}",
                fix="the features became non-finite: lower the learning rate or enable gradient clipping",
            )
        self.steps += 1
        alpha = self.config.alpha
        self.ema = alpha * value + (1.0 - alpha) * self.ema
        self.last_ema = self.ema
        return self._check()

    def end_epoch(self) -> bool:
        """Count a finished epoch on the current block; True if the block changed."""
        self.epochs_on_block += 1
        return self._check()

    def _check(self) -> bool:
        """The level-up rule: at most one level (plus a possible snap to L)."""
        if self.block >= self.num_blocks:
            return False
        if self.ema >= self.config.threshold:
            reason: Reason = "threshold"
        elif self.epochs_on_block >= self.config.max_epochs_per_block:
            reason = "epoch_cap"
        else:
            return False
        self._move(self.block + 1, reason)
        self._maybe_snap()
        return True

    def _maybe_snap(self) -> None:
        s = self.config.snap_to_last
        if s is not None and s <= self.block < self.num_blocks:
            self._move(self.num_blocks, "snap")

    def _move(self, to_block: int, reason: Reason) -> None:
        self.events.append(LevelUp(self.steps, self.block, to_block, reason))
        self.block = to_block
        self.ema = 0.0
        self.epochs_on_block = 0

    def _check_block(self, block: Any) -> None:
        if not _is_int(block) or not 1 <= block <= self.num_blocks:
            raise LeapkdError(
                f"block must be an integer in 1..{self.num_blocks}, got {block!r}",
                fix=f"choose a teacher block between 1 and {self.num_blocks}",
            )

    def state_dict(self) -> dict[str, Any]:
        """The controller state as plain JSON-serialisable values."""
        return {
            "version": _STATE_VERSION,
            "num_blocks": self.num_blocks,
            "block": self.block,
            "start_block": self.start_block,
            "ema": self.ema,
            "epochs_on_block": self.epochs_on_block,
            "steps": self.steps,
            "events": [asdict(e) for e in self.events],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()`; LeapkdError if it is malformed or for another number of blocks."""
        fix_corrupt = "resume from an intact checkpoint written by this version of leapkd"
        try:
            version, num_blocks = state["version"], state["num_blocks"]
            block, start_block = state["block"], state["start_block"]
            ema, epochs, steps = float(state["ema"]), state["epochs_on_block"], state["steps"]
            events = [
                LevelUp(int(e["step"]), int(e["from_block"]), int(e["to_block"]), e["reason"]) for e in state["events"]
            ]
        except (KeyError, TypeError, ValueError) as err:
            raise LeapkdError(f"the curriculum state is malformed ({err!r})", fix=fix_corrupt) from None
        if version != _STATE_VERSION:
            raise LeapkdError(f"unsupported curriculum state version {version!r}", fix=fix_corrupt)
        if num_blocks != self.num_blocks:
            raise LeapkdError(
                f"the curriculum state is for a teacher with {num_blocks} blocks, but this one has {self.num_blocks}",
                fix="resume with the same teacher as the checkpoint, or start a fresh run",
            )
        self._check_block(block)
        self._check_block(start_block)
        if not (_is_int(epochs) and epochs >= 0 and _is_int(steps) and steps >= 0 and math.isfinite(ema)):
            raise LeapkdError("the curriculum state has invalid counters or EMA", fix=fix_corrupt)
        if any(e.reason not in _REASONS for e in events):
            raise LeapkdError("the curriculum state has an unknown level-up reason", fix=fix_corrupt)
        self.block, self.start_block, self.ema = block, start_block, ema
        self.epochs_on_block, self.steps, self.events = epochs, steps, events
