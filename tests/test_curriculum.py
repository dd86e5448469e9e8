"""Tests for the LEAP curriculum controller (leapkd.curriculum)."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from leapkd.curriculum import Curriculum, CurriculumConfig, LevelUp
from leapkd.errors import LeapkdError


def make(num_blocks: int = 4, **kw: object) -> Curriculum:
    """A controller with the paper's ImageNet-1k threshold and epoch cap unless told otherwise."""
    settings = {"threshold": 0.8, "max_epochs_per_block": 5, **kw}
    return Curriculum(CurriculumConfig(num_blocks=num_blocks, **settings))  # type: ignore[arg-type]


def test_module_does_not_import_torch() -> None:
    code = "import sys, leapkd.curriculum; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_initial_state() -> None:
    c = make()
    assert (c.block, c.ema, c.epochs_on_block, c.num_blocks, c.steps) == (1, 0.0, 0, 4, 0)
    assert c.events == [] and c.level_up_steps == [] and not c.at_last


def test_threshold_rule_levels_at_not_below() -> None:
    c = make(threshold=0.75)
    assert c.observe(0.74) is False and c.block == 1 and c.ema == 0.74
    assert c.observe(0.75) is True and c.block == 2
    assert c.ema == 0.0 and c.epochs_on_block == 0
    assert c.events == [LevelUp(step=2, from_block=1, to_block=2, reason="threshold")]
    assert c.level_up_steps == [2]


def test_epoch_cap() -> None:
    c = make(threshold=0.9, max_epochs_per_block=3)
    for _ in range(2):
        c.observe(0.1)
        assert c.end_epoch() is False
    assert c.epochs_on_block == 2 and c.block == 1
    c.observe(0.1)
    assert c.end_epoch() is True
    assert (c.block, c.epochs_on_block, c.ema) == (2, 0, 0.0)
    assert c.events == [LevelUp(3, 1, 2, "epoch_cap")]


def test_end_epoch_also_checks_threshold_after_load() -> None:
    c = make(threshold=0.5)
    state = c.state_dict()
    state["ema"] = 0.6  # e.g. the threshold was lowered between runs
    c.load_state_dict(state)
    assert c.end_epoch() is True and c.events[-1].reason == "threshold"


def test_at_most_one_level_per_check() -> None:
    c = make(num_blocks=6, threshold=0.5)
    blocks = []
    for _ in range(8):
        c.observe(1.0)
        blocks.append(c.block)
    assert blocks == [2, 3, 4, 5, 6, 6, 6, 6]
    assert c.level_up_steps == [1, 2, 3, 4, 5]
    c2 = make(num_blocks=6, threshold=0.5, max_epochs_per_block=1)
    c2.observe(1.0)  # threshold -> 2; the epoch end then caps -> 3, one level each
    assert c2.block == 2
    assert c2.end_epoch() and c2.block == 3


def test_ema_lags_and_resets() -> None:
    # alpha = 0.5, metric 1: ema 0.5, 0.75, 0.875 -> levels on the third step (threshold 0.8).
    c = make(threshold=0.8, alpha=0.5)
    assert not c.observe(1.0) and c.ema == 0.5
    assert not c.observe(1.0) and c.ema == 0.75
    assert c.observe(1.0) and c.block == 2 and c.ema == 0.0
    # New block: the EMA starts again from 0, not from the previous block's value.
    assert not c.observe(0.5) and c.ema == 0.25
    assert not c.observe(0.25) and c.ema == 0.25
    assert not c.observe(1.0) and c.ema == 0.625
    c3 = make(threshold=0.8, alpha=0.25)
    expected = 0.0
    for m in [0.5, 1.0, 0.75, 1.0]:
        c3.observe(m)
        expected = 0.25 * m + 0.75 * expected
        assert c3.ema == pytest.approx(expected)


def test_never_goes_past_last_block() -> None:
    c = make(num_blocks=3, threshold=0.1, max_epochs_per_block=1)
    for _ in range(5):
        c.observe(1.0)
        c.end_epoch()
    assert c.block == 3 and c.at_last
    assert [e.to_block for e in c.events] == [2, 3]
    assert c.observe(1.0) is False and c.end_epoch() is False
    assert c.ema == 1.0 and c.epochs_on_block == 5  # 4 epochs on block 3 in the loop, then 1


def test_single_block_teacher() -> None:
    c = make(num_blocks=1)
    assert c.at_last and c.observe(1.0) is False and c.end_epoch() is False


def test_snap_to_last_after_level_up() -> None:
    c = make(num_blocks=12, threshold=0.5, snap_to_last=3)
    c.observe(1.0)
    assert c.block == 2
    assert c.observe(1.0) is True and c.block == 12
    assert c.events[-2:] == [LevelUp(2, 2, 3, "threshold"), LevelUp(2, 3, 12, "snap")]
    assert c.level_up_steps == [1, 2]
    assert c.ema == 0.0 and c.epochs_on_block == 0


def test_snap_to_last_at_start() -> None:
    c = make(num_blocks=12, snap_to_last=5)
    c.start(4)
    assert c.block == 4 and c.events == []
    c.start(7)
    assert c.block == 12 and c.start_block == 7
    assert c.events == [LevelUp(0, 7, 12, "snap")]
    assert make(num_blocks=12, snap_to_last=12).calibrate([0.0] * 11 + [1.0]) == 12


def test_start_resets_and_validates() -> None:
    c = make()
    c.observe(0.3)
    c.start(3)
    assert (c.block, c.ema, c.epochs_on_block, c.start_block) == (3, 0.0, 0, 3)
    for bad in (0, 5, 2.0, True):
        with pytest.raises(LeapkdError, match="block"):
            c.start(bad)  # type: ignore[arg-type]


def test_calibration_argmax_and_ties() -> None:
    c = make(num_blocks=5)
    assert c.calibrate([0.1, 0.3, 0.9, 0.2, 0.4]) == 3 and c.block == 3 and c.start_block == 3
    assert make(num_blocks=5).calibrate([0.2, 0.7, 0.1, 0.7, 0.7]) == 2
    assert make(num_blocks=3).calibrate([0.5, 0.5, 0.5]) == 1
    assert make(num_blocks=3).calibrate([float("nan"), 0.1, 0.2]) == 3
    with pytest.raises(LeapkdError, match="3 scores"):
        make(num_blocks=4).calibrate([0.1, 0.2, 0.3])
    with pytest.raises(LeapkdError, match="NaN"):
        make(num_blocks=2).calibrate([float("nan")] * 2)


def test_non_finite_metric_rejected() -> None:
    c = make()
    with pytest.raises(LeapkdError, match="nan"):
        c.observe(float("nan"))
    assert c.steps == 0 and c.ema == 0.0


def _drive(c: Curriculum, metrics: list[float], steps_per_epoch: int) -> list[tuple[bool, int, float]]:
    """Feed metrics, ending an epoch every `steps_per_epoch` steps; the decisions taken."""
    out = []
    for m in metrics:
        changed = c.observe(m)
        if c.steps % steps_per_epoch == 0:
            changed = c.end_epoch() or changed
        out.append((changed, c.block, c.ema))
    return out


def test_state_round_trip_mid_run() -> None:
    rng = random.Random(0)
    metrics = [min(1.0, 0.004 * i + rng.uniform(-0.1, 0.1)) for i in range(300)]
    cfg = CurriculumConfig(num_blocks=12, threshold=0.85, alpha=0.3, max_epochs_per_block=2, snap_to_last=10)
    full = Curriculum(cfg)
    full.calibrate([0.1, 0.2, 0.15] + [0.0] * 9)
    first = _drive(full, metrics[:137], steps_per_epoch=20)
    state = full.state_dict()
    restored = Curriculum(cfg)
    restored.load_state_dict(json.loads(json.dumps(state)))
    assert restored.state_dict() == state
    rest_a = _drive(full, metrics[137:], steps_per_epoch=20)
    rest_b = _drive(restored, metrics[137:], steps_per_epoch=20)
    assert rest_a == rest_b
    assert full.state_dict() == restored.state_dict()
    assert full.events == restored.events
    assert any(changed for changed, _, _ in first + rest_a)  # the run did level up
    assert {e.reason for e in full.events} >= {"epoch_cap", "snap"}


def test_load_rejects_other_num_blocks_and_garbage() -> None:
    state = make(num_blocks=12).state_dict()
    with pytest.raises(LeapkdError, match="12 blocks.*this one has 4"):
        make(num_blocks=4).load_state_dict(state)
    c = make()
    good = c.state_dict()
    for broken in ({k: v for k, v in good.items() if k != "ema"}, {**good, "block": 9}, {**good, "version": 99}):
        with pytest.raises(LeapkdError):
            c.load_state_dict(broken)
    assert c.state_dict() == good


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("threshold", 0.0),
        ("threshold", 1.5),
        ("threshold", float("nan")),
        ("alpha", 0.0),
        ("alpha", 1.01),
        ("max_epochs_per_block", 0),
        ("max_epochs_per_block", 2.5),
        ("num_blocks", 0),
        ("snap_to_last", 0),
        ("snap_to_last", 13),
    ],
)
def test_bad_config_names_the_key(key: str, value: object) -> None:
    kw: dict[str, object] = {"num_blocks": 12, key: value}
    with pytest.raises(LeapkdError, match=key) as info:
        CurriculumConfig(**kw)  # type: ignore[arg-type]
    assert info.value.fix is not None


def test_good_config_edges() -> None:
    CurriculumConfig(num_blocks=1, threshold=1.0, alpha=1.0, max_epochs_per_block=1, snap_to_last=1)
    CurriculumConfig(num_blocks=12, threshold=1e-6, alpha=1e-6)
