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


def _timm_lr_per_epoch(epochs: int, peak: float, warmup: int, warmup_lr: float, min_lr: float) -> list[float]:
    """The LR each epoch runs at under timm's CosineLRScheduler stepped after each epoch with
    that epoch's index, as DeiT's (and SpectralKD's) training loop does."""
    from timm.scheduler import CosineLRScheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    ref = CosineLRScheduler(opt, t_initial=epochs, lr_min=min_lr, warmup_lr_init=warmup_lr, warmup_t=warmup,
                            cycle_limit=1, t_in_epochs=True, warmup_prefix=False)  # fmt: skip
    out = []
    for epoch in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        ref.step(epoch)
    return out


def test_the_epoch_schedule_is_timms_cosine_stepped_after_each_epoch():
    epochs, per_epoch, peak = 14, 3, 5e-4
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    sched = WarmupCosine(opt, epochs * per_epoch, 5, 1e-5 / peak, 1e-6 / peak, steps_per_epoch=per_epoch)
    seq = lrs(opt, sched, epochs * per_epoch)
    by_epoch = [seq[e * per_epoch : (e + 1) * per_epoch] for e in range(epochs)]
    assert all(len(set(lr)) == 1 for lr in by_epoch)  # constant within an epoch
    expected = _timm_lr_per_epoch(epochs, peak, 5, 1e-6, 1e-5)
    assert [lr[0] for lr in by_epoch] == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert expected[0] == expected[1] == pytest.approx(1e-6)  # the reference's lag: epochs 0 and 1 at warmup_lr
    with pytest.raises(ValueError, match="per-step"):
        sched.restart("peak", sched.last_epoch)


def test_an_absolute_warmup_start_ramps_as_timm():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = WarmupCosine(opt, total_steps=100, warmup_steps=10, min_lr_ratio=0.0, warmup_start=0.1)
    seq = lrs(opt, sched, 11)
    assert seq[0] == pytest.approx(0.2) and seq[5] == pytest.approx(2.0 * (0.1 + 5 * 0.9 / 10))
    assert seq[10] == pytest.approx(2.0)


def test_a_run_with_the_spectralkd_schedule_logs_timms_lr_every_step(tiny):
    from leapkd.rundir import read_metrics
    from leapkd.training import distill

    cfg = dict(tiny, epochs=6, warmup_epochs=2, lr=1e-3, warmup_lr=1e-6, min_lr=1e-5, lr_interval="epoch")
    r = distill(**cfg)
    rows = read_metrics(r.run_dir / "metrics.csv")
    per_epoch = r.summary.steps // 6
    expected = _timm_lr_per_epoch(6, 1e-3, 2, 1e-6, 1e-5)
    assert [row["lr"] for row in rows] == pytest.approx([expected[s // per_epoch] for s in range(len(rows))], rel=1e-5)


class _ReferenceMultiplier:
    """The LEAP reference's `_CurriculumLRState` in its plain (`--curriculum-lr-reset`) and
    `--curriculum-lr-decay-peak` modes, written here from its code (train_distill.py:938-1034):
    a warm-up ramp t / w, one segment whose cosine runs to the end, a peak of 1 or of the
    warm-up-free envelope at the segment's start."""

    def __init__(self, total, warmup, floor, decay_peak):
        self.total, self.warmup, self.floor, self.decay_peak = total, warmup, floor, decay_peak
        self.start = warmup

    def envelope(self, step):
        progress = min(1.0, step / max(1, self.total))
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))

    def __call__(self, step):
        if self.warmup > 0 and step < self.warmup:
            return step / self.warmup
        peak = self.envelope(self.start) if self.decay_peak else 1.0
        progress = min(1.0, max(0.0, (step - self.start) / max(1, self.total - self.start)))
        return self.floor + (peak - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))

    def reset(self, step):
        if step >= self.warmup:  # the call sites skip level-ups inside the warm-up (T:1599, 1644)
            self.start = step


@pytest.mark.parametrize("warmup", [0, 5])
@pytest.mark.parametrize("mode", ["peak", "envelope"])
def test_reference_restarts_give_the_references_lr_at_every_step(mode, warmup):
    """Under Lightning, LambdaLR's multiplier for step g + 1 is computed after step g: a level-up
    decided inside step g (reset(g)) first shows at step g + 1, one decided at an epoch end
    after g steps (reset(g), the LR of step g already set) at step g + 1 as well."""
    total, in_step, epoch_end = 60, {3, 12, 33}, {20, 45}
    reference = _ReferenceMultiplier(total, warmup, 0.001, decay_peak=mode == "envelope")
    expected, lr = [], reference(0)
    for g in range(total):
        expected.append(lr)
        if g in in_step:
            reference.reset(g)
        lr = reference(g + 1)
        if g + 1 in epoch_end:
            reference.reset(g + 1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupCosine(opt, total, warmup, 0.001, reference_restarts=mode)
    got = []
    for g in range(total):  # leapkd's module: the optimizer and schedule step, then the level-up
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        if g in in_step:
            sched.restart(mode, decided_at=g)
        if g + 1 in epoch_end:
            sched.restart(mode, decided_at=g + 1)
    assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("mode", ["peak", "envelope"])
def test_a_resume_right_after_an_epoch_end_restart_keeps_the_references_lr(mode):
    """The checkpoint is written after the epoch-end hook: the restart is decided but the next
    step still runs at the old LR, and so must the resumed run's."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupCosine(opt, 60, 5, 0.001, reference_restarts=mode)
    for _ in range(20):
        opt.step()
        sched.step()
    sched.restart(mode, decided_at=20)  # an epoch end after 20 steps
    before = opt.param_groups[0]["lr"]
    fresh = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    resumed = WarmupCosine(fresh, 60, 5, 0.001, reference_restarts=mode)
    resumed.load_state_dict(sched.state_dict())
    assert resumed.get_lr() == [pytest.approx(before)]
    for s in (sched, resumed):
        s.optimizer.step()
        s.step()
    assert resumed.get_lr() == [pytest.approx(opt.param_groups[0]["lr"])] and opt.param_groups[0]["lr"] != before


def test_leapkds_restart_runs_the_first_step_on_the_new_target_at_the_new_peak():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupCosine(opt, 60, 0, 0.001)
    for _ in range(13):
        opt.step()
        sched.step()
    sched.restart("peak", decided_at=12)  # decided in step 12: step 13 trains on the new target
    assert opt.param_groups[0]["lr"] == 1.0
