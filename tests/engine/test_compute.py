"""Compute options: precision and the teacher's dtype, gradient accumulation, the student EMA,
LR scaling by the global batch, torch.compile."""

import pytest
import torch
from safetensors.torch import load_file

from leapkd import hardware
from leapkd.config import DistillConfig
from leapkd.engine.optimizers import scaled_lr
from leapkd.rundir import read_metrics
from leapkd.training import distill


def _student(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "student.safetensors"))


def _without_time(run_dir) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in read_metrics(run_dir / "metrics.csv")]


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= atol, worst


def test_mixed_precision_keeps_the_teacher_in_bf16(tiny):
    r = distill(name="bf16", **{**tiny, "epochs": 1, "precision": "bf16-mixed"})
    assert r.summary.precision == "bf16-mixed" and r.summary.teacher_dtype == "bfloat16"
    rows = read_metrics(r.run_dir / "metrics.csv")
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in rows)
    assert all(v.dtype == torch.float32 for v in _student(r.run_dir).values())  # the student trains in fp32
    full = distill(name="fp32", **{**tiny, "epochs": 1})
    assert full.summary.teacher_dtype == "float32"


@pytest.mark.parametrize("bf16", [True, False], ids=["cpu with bf16", "cpu without"])
def test_auto_precision_is_resolved_and_recorded(tiny, monkeypatch, bf16):
    monkeypatch.setattr(hardware, "cpu_computes_bf16", lambda: bf16)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512_bf16"} if bf16 else {"avx2"}))
    r = distill(name="auto", **{**tiny, "epochs": 1, "max_steps": 2, "precision": "auto"})
    assert r.summary.precision == ("bf16-mixed" if bf16 else "32")
    assert r.summary.precision_reason.startswith("auto:")
    assert r.summary.teacher_dtype == ("bfloat16" if bf16 else "float32")


@pytest.mark.parametrize("method", ["fixed", "leap"])
def test_accumulating_two_batches_of_four_is_one_batch_of_eight(tiny, method):
    settings = {**tiny, "method": method, "grad_clip": None}
    if method == "leap":  # level-ups decided on the metric of the whole step's images
        settings |= {"threshold": 0.5, "calibrate": False}
    big = distill(name="big", **{**settings, "batch_size": 8})
    acc = distill(name="acc", **{**settings, "batch_size": 4, "accumulate_grad_batches": 2})
    assert acc.summary.steps == big.summary.steps == 15
    assert acc.summary.global_batch == big.summary.global_batch == 8
    assert acc.summary.level_ups == big.summary.level_ups
    _assert_same_weights(_student(acc.run_dir), _student(big.run_dir), atol=1e-5)
    rows_big, rows_acc = read_metrics(big.run_dir / "metrics.csv"), read_metrics(acc.run_dir / "metrics.csv")
    for a, b in zip(rows_acc, rows_big):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4) and a["lr"] == pytest.approx(b["lr"])
        assert a["metric"] == pytest.approx(b["metric"], rel=1e-4)
    # the FLOPs are those of the same images: two batches of four cost what one of eight does
    assert acc.summary.teacher_flops == big.summary.teacher_flops


def test_an_ema_with_decay_zero_is_the_student_and_with_decay_one_the_initial_weights(tiny):
    settings = {**tiny, "method": "fixed", "epochs": 1, "snapshot_every": 5}
    plain = distill(name="plain", **settings)
    follows = distill(name="ema0", ema_decay=0.0, **settings)
    frozen = distill(name="ema1", ema_decay=1.0, **settings)
    _assert_same_weights(_student(follows.run_dir), _student(plain.run_dir), atol=0.0)
    initial = load_file(str(plain.run_dir / "snapshots" / "step-000000.safetensors"))
    _assert_same_weights(_student(frozen.run_dir), initial, atol=0.0)
    # the snapshots are of the EMA student as well; the training itself is unchanged
    assert _without_time(frozen.run_dir) == _without_time(plain.run_dir)
    last = load_file(str(frozen.run_dir / "snapshots" / "step-000005.safetensors"))
    _assert_same_weights(last, initial, atol=0.0)


def test_the_ema_continues_across_a_resume(tiny, monkeypatch, interrupt_at):
    settings = {**tiny, "method": "fixed", "ema_decay": 0.5}
    whole = distill(name="whole", **settings)
    with monkeypatch.context() as m:
        interrupt_at(m, 7)  # mid-epoch
        assert distill(name="part", **settings).summary.status == "interrupted"
    resumed = distill(name="part", resume=True, **settings)
    _assert_same_weights(_student(resumed.run_dir), _student(whole.run_dir), atol=1e-6)


@pytest.mark.parametrize(
    "scale,batch,expected",
    [("none", 1024, 5e-4), ("linear", 1024, 2e-3), ("sqrt", 1024, 1e-3), ("linear", 64, 1.25e-4)],
)
def test_lr_scale_by_the_global_batch(scale, batch, expected):
    cfg = DistillConfig(lr=5e-4, lr_scale=scale, lr_reference_batch=256)
    assert scaled_lr(cfg, batch) == pytest.approx(expected)


def test_lr_scale_sees_accumulation(tiny):
    settings = {**tiny, "epochs": 1, "batch_size": 4, "accumulate_grad_batches": 2}
    r = distill(name="lr", lr_scale="linear", lr_reference_batch=4, **settings)
    assert r.summary.global_batch == 8 and r.summary.peak_lr == pytest.approx(2 * 5e-4)


def test_compile_on_a_tiny_model_trains_like_eager(tiny):
    settings = {**tiny, "method": "fixed", "epochs": 1, "max_steps": 3}
    eager = distill(name="eager", **settings)
    compiled = distill(name="compiled", compile=True, **settings)
    assert compiled.summary.steps == 3
    for a, b in zip(read_metrics(compiled.run_dir / "metrics.csv"), read_metrics(eager.run_dir / "metrics.csv")):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    _assert_same_weights(_student(compiled.run_dir), _student(eager.run_dir), atol=1e-4)


def test_the_ema_averages_the_head_and_kept_weights_choose_the_runs_student(tiny):
    """As timm's ModelEma in the SpectralKD reference: the average covers the classification head;
    `kept_weights live` keeps the trained weights as the run's student (evaluated, saved) and saves
    the average beside them; `ema` makes the average the student. The training is the same."""
    settings = {**tiny, "method": "spectralkd", "ce_weight": 1.0, "ema_decay": 1.0, "epochs": 1,
                "eval_every": 5, "eval_images_per_class": 2, "snapshot_every": 5}  # fmt: skip
    ema = distill(name="ema", **settings)
    live = distill(name="live", kept_weights="live", **settings)
    training = [[(r["loss"], r["lr"]) for r in read_metrics(run.run_dir / "metrics.csv")] for run in (ema, live)]
    assert training[0] == training[1]
    initial = load_file(str(live.run_dir / "snapshots" / "step-000000.safetensors"))
    # decay 1: the average is the initial student and head; the live weights have moved
    _assert_same_weights(_student(ema.run_dir), initial, atol=0.0)
    _assert_same_weights(load_file(str(live.run_dir / "student_ema.safetensors")), initial, atol=0.0)
    heads = {n: load_file(str(r.run_dir / f"{n}_head.safetensors")) for n, r in
             (("student", ema), ("student_ema", live))}  # fmt: skip
    live_head = load_file(str(live.run_dir / "student_head.safetensors"))
    _assert_same_weights(heads["student"], heads["student_ema"], atol=0.0)
    assert not torch.equal(heads["student"]["weight"], live_head["weight"])
    assert not (ema.run_dir / "student_ema.safetensors").exists()


def test_a_checkpoint_whose_ema_has_no_head_resumes(tiny, monkeypatch, interrupt_at):
    """Checkpoints of leapkd before the head was averaged hold `module.<student key>` only: the
    student's average continues exactly, the head's starts from the restored live head."""
    settings = {**tiny, "method": "spectralkd", "ce_weight": 1.0, "ema_decay": 0.5}
    whole = distill(name="whole", **settings)
    with monkeypatch.context() as m:
        interrupt_at(m, 7)
        assert distill(name="part", **settings).summary.status == "interrupted"
    path = whole.run_dir.parent / "part" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(path, weights_only=False)
    (key,) = [k for k in ckpt["callbacks"] if "StudentEma" in k]
    state = ckpt["callbacks"][key]
    assert any(k.startswith("module.head.") for k in state)
    ckpt["callbacks"][key] = {
        "module." + k.removeprefix("module.student."): v for k, v in state.items() if k.startswith("module.student.")
    }
    torch.save(ckpt, path)
    resumed = distill(name="part", resume=True, **settings)
    _assert_same_weights(_student(resumed.run_dir), _student(whole.run_dir), atol=1e-6)
