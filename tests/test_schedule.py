import math

import pytest
import torch

from leapkd.schedule import WarmupCosine


def make(total=100, warmup=10, floor=0.1):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    return opt, WarmupCosine(opt, total_steps=total, warmup_steps=warmup, min_lr_ratio=floor)


def lrs(opt, sched, n):
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_cosine_to_floor():
    opt, sched = make()
    seq = lrs(opt, sched, 100)
    assert seq[0] == pytest.approx(2.0 * 1 / 10)
    assert seq[9] == pytest.approx(2.0)
    assert seq[10] == pytest.approx(2.0)  # cosine starts at the peak
    assert all(a >= b for a, b in zip(seq[10:], seq[11:]))  # monotone decay
    mid = 10 + 45
    assert seq[mid] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))))
    assert seq[-1] > 2.0 * 0.1


@pytest.mark.parametrize("mode", ["peak", "envelope"])
def test_restart_starts_a_new_segment(mode):
    opt, sched = make()
    lrs(opt, sched, 60)
    envelope = sched.envelope(60)
    sched.restart(mode, sched.last_epoch)
    seq = lrs(opt, sched, 40)
    peak = 1.0 if mode == "peak" else envelope
    assert seq[0] == pytest.approx(2.0 * peak)  # applied at once, to the next step
    assert seq[20] == pytest.approx(2.0 * (0.1 + (peak - 0.1) * 0.5 * (1 + math.cos(math.pi * 0.5))))
    assert all(a >= b for a, b in zip(seq, seq[1:]))


def test_state_round_trip_continues_exactly():
    opt, sched = make()
    lrs(opt, sched, 30)
    sched.restart("peak", sched.last_epoch)
    lrs(opt, sched, 5)
    state = sched.state_dict()
    expected = lrs(opt, sched, 20)
    opt2, sched2 = make()
    sched2.load_state_dict(state)
    opt2.param_groups[0]["lr"] = sched2.get_lr()[0]
    assert lrs(opt2, sched2, 20) == pytest.approx(expected)


@pytest.mark.parametrize("mode", ["peak", "envelope"])
def test_a_level_up_during_warmup_restarts_nothing(mode):
    opt, sched = make(total=300, warmup=20)
    seq, taken = [], []
    for _ in range(25):  # a level-up after every step, warm-up included
        seq.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        if sched.restart(mode, sched.last_epoch):
            taken.append(sched.last_epoch)
    warmup = seq[:20]
    assert warmup == pytest.approx([2.0 * (t + 1) / 20 for t in range(20)])  # the straight ramp
    assert all(a < b for a, b in zip(warmup, warmup[1:]))
    assert taken == [20, 21, 22, 23, 24, 25]  # restarts take effect once the warm-up is over
