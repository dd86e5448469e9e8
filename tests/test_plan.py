"""`leapkd plan`: the counts equal a run's own ledger, the estimates scale as they should,
LEAP's largest saving follows the epoch-cap pace, and the command's output and errors."""

from __future__ import annotations

import json

import pytest
import torch

import leapkd
from leapkd.accounting import teacher_flops_by_depth
from leapkd.cli import main
from leapkd.data import builtin_datasets
from leapkd.errors import LeapkdError
from leapkd.models import freeze, load_backbone
from leapkd.plan import (
    ASSUMED_MFU,
    BYTES_PER_TRAINED_PARAM,
    GPUS,
    H200_MFU,
    USABLE_MEMORY,
    PlanRequest,
    check_fits,
    estimate_plan,
    leap_largest_saving,
    make_plan,
    measure,
    training_images,
)

# vit-nano -> vit-nano at 64 px: 6 levels of 16 patches, counted in well under a second
TINY = dict(teacher="vit-nano", student="vit-nano", image_size=64, batch_size=8, images=40, epochs=3)
RUN = dict(
    teacher="vit-nano",
    student="vit-nano",
    image_size=64,
    batch_size=8,
    epochs=3,
    allow_random_teacher=True,
    data="fashion-mnist",
    subset_per_class=4,
    max_steps=1,
    warmup_steps=0,
    precision="32",
    progress=False,
)


@pytest.fixture(scope="module")
def leap_request() -> PlanRequest:
    return PlanRequest(**TINY, method="leap", max_epochs_per_block=2, gpu="a100", precision="32")


@pytest.fixture(scope="module")
def leap_counts(leap_request):
    return measure(leap_request)


def test_flops_per_image_equal_the_runs_ledger(tmp_path, leap_counts):
    """One step of a real run charges batch x the plan's per-image counts: the calibration
    pass at full depth, the teacher to the calibrated block, the student step."""
    run = leapkd.distill(method="leap", max_epochs_per_block=2, output_dir=str(tmp_path), **RUN).summary
    by_depth, batch = leap_counts.teacher_flops_by_depth, TINY["batch_size"]
    assert run.student_flops == batch * leap_counts.student_step_flops
    start = run.start_block
    assert run.teacher_flops == batch * (by_depth[start - 1] + by_depth[-1])


def test_fixed_counts_equal_the_runs_ledger(tmp_path):
    counts = measure(PlanRequest(**TINY, method="fixed", precision="32"))
    run = leapkd.distill(method="fixed", output_dir=str(tmp_path), **RUN).summary
    assert run.teacher_flops == TINY["batch_size"] * counts.teacher_flops_by_depth[-1]
    assert run.student_flops == TINY["batch_size"] * counts.student_step_flops
    assert counts.max_epochs_per_block is None and not counts.calibrate


def test_teacher_counts_are_per_image_and_linear_in_the_batch(leap_counts):
    teacher = freeze(load_backbone("vit-nano", 64, patch_size=16))
    three = teacher_flops_by_depth(teacher, torch.zeros(3, 3, 64, 64))
    assert three == [3 * f for f in leap_counts.teacher_flops_by_depth]
    assert len(three) == 6 and all(a < b for a, b in zip(three, three[1:]))  # deeper costs more


def test_memory_and_time_scale_with_batch_images_epochs_and_gpus(leap_request, leap_counts):
    base = make_plan(leap_request, leap_counts)
    act = leap_counts.activation_bytes_per_image
    assert act > 0
    assert base.fixed_memory_bytes == (
        BYTES_PER_TRAINED_PARAM * leap_counts.student_params
        + 4 * leap_counts.teacher_params  # precision 32: the teacher in fp32
        + leap_counts.activation_bytes_per_step
    )
    for batch in (1, 8, 64):
        plan = make_plan(leap_request.model_copy(update=dict(batch_size=batch)), leap_counts)
        assert plan.memory_bytes == base.fixed_memory_bytes + batch * act
        assert plan.images_per_second_per_gpu == base.images_per_second_per_gpu  # FLOPs per image
    longer = make_plan(leap_request.model_copy(update=dict(images=400, epochs=6)), leap_counts)
    assert longer.hours == pytest.approx(20 * base.hours)
    wider = make_plan(leap_request.model_copy(update=dict(gpus=4)), leap_counts)
    assert wider.images_per_second == pytest.approx(4 * base.images_per_second)
    assert wider.hours == pytest.approx(base.hours / 4)
    a100 = GPUS["a100"]  # precision 32 runs on the TF32 peak
    expected = ASSUMED_MFU * a100.tf32_peak_tflops * 1e12 / base.flops_per_image
    assert base.images_per_second_per_gpu == pytest.approx(expected)
    assert base.hours == pytest.approx(40 * 3 / expected / 3600)
    assert make_plan(leap_request, leap_counts, mfu=0.7).images_per_second == pytest.approx(2 * expected)


def test_leap_saving_on_a_hand_computed_case():
    """4 levels costing 10, 20, 30, 40 per image, a student step of 40, cap 2, 6 epochs:
    levels 1, 1, 2, 2, 3, 3 -> teacher 120 + student 240 = 360 against 6 x 80 = 480."""
    assert leap_largest_saving([10, 20, 30, 40], 40, epochs=6, cap=2) == pytest.approx(0.25)
    # the first batch of each GPU (10 images of 100) pays a calibration pass at full depth
    run, fixed = 100 * 360 + 10 * 40, 100 * 480
    saving = leap_largest_saving([10, 20, 30, 40], 40, epochs=6, cap=2, images=100, calibration_images=10)
    assert saving == pytest.approx(1 - run / fixed)
    # long runs spend most epochs at the last level: 1, 2, 3, then 4 x 7 -> (60 + 280 + 400) / 800
    assert leap_largest_saving([10, 20, 30, 40], 40, epochs=10, cap=1) == pytest.approx(1 - 740 / 800)


def test_plan_uses_the_cap_formula_and_other_methods_save_nothing(leap_request, leap_counts):
    plan = make_plan(leap_request, leap_counts)
    t, s = leap_counts.teacher_flops_by_depth, leap_counts.student_step_flops
    levels = [1, 1, 2]  # 3 epochs, cap 2
    run = 40 * sum(t[b - 1] + s for b in levels) + 8 * t[-1]  # + the calibration batch
    assert plan.leap_saving == pytest.approx(1 - run / (40 * 3 * (t[-1] + s)))
    assert plan.hours_at_largest_saving == pytest.approx(plan.hours * (1 - plan.leap_saving))
    for method in ("fixed", "spectralkd"):
        other = PlanRequest(**TINY, method=method, gpu="a100", precision="32")
        assert make_plan(other, leap_counts).leap_saving == 0.0


def test_a_batch_that_does_not_fit_names_the_largest_that_does(leap_request, leap_counts):
    plan = make_plan(leap_request.model_copy(update=dict(gpu="l4")), leap_counts)
    usable = USABLE_MEMORY * GPUS["l4"].memory_gib * 2**30
    largest = plan.largest_batch
    assert plan.fixed_memory_bytes + largest * leap_counts.activation_bytes_per_image <= usable
    assert plan.fixed_memory_bytes + (largest + 1) * leap_counts.activation_bytes_per_image > usable
    check_fits(make_plan(leap_request.model_copy(update=dict(gpu="l4", batch_size=largest)), leap_counts))
    with pytest.raises(LeapkdError) as err:
        check_fits(make_plan(leap_request.model_copy(update=dict(gpu="l4", batch_size=largest + 1)), leap_counts))
    assert f"`batch_size` {largest} or less" in (err.value.fix or "")


def test_bf16_halves_the_teacher_and_the_mfu_is_assumed_until_measured():
    counts = measure(PlanRequest(**TINY, method="fixed"))
    plan = make_plan(PlanRequest(**TINY, method="fixed"), counts)
    fixed = BYTES_PER_TRAINED_PARAM * counts.student_params + 2 * counts.teacher_params
    assert plan.fixed_memory_bytes == fixed + counts.activation_bytes_per_step
    assert counts.activation_bytes_per_step > 0  # autocast's bf16 copies of the weights, once per step
    h200 = GPUS["h200"]
    assert plan.gpu is h200 and plan.mfu == H200_MFU == ASSUMED_MFU
    assert plan.mfu_basis.startswith("assumed, not measured")
    assert any("assumed, not measured" in line for line in plan.assumptions())


def test_command_prints_the_table_and_the_assumptions(capsys, leap_counts):
    args = ["plan", "--teacher", "vit-nano", "--student", "vit-nano", "--image-size", "64", "--batch-size", "8"]
    args += ["--images", "40", "--epochs", "3", "--max-epochs-per-block", "2", "--gpu", "a100", "--precision", "32"]
    assert main(args) == 0
    out = capsys.readouterr().out
    gflop = (leap_counts.teacher_flops_by_depth[-1] + leap_counts.student_step_flops) / 1e9
    assert "GFLOP per image per step" in out and f"{gflop:.3g}" in out
    assert "LEAP: largest FLOP saving" in out and "A100" in out and "assumed" in out
    assert "40 images (given) x 3 epochs" in out

    assert main([*args, "--json", "--gpus", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["measured"]["teacher_flops_by_depth"] == list(leap_counts.teacher_flops_by_depth)
    assert data["request"]["gpus"] == 2 and data["gpu"]["name"] == "a100"
    expected = make_plan(PlanRequest(**TINY, method="leap", max_epochs_per_block=2, gpu="a100", gpus=2,
                                     precision="32"), leap_counts)  # fmt: skip
    assert data["images_per_second"] == pytest.approx(expected.images_per_second)
    assert data["leap_saving"] == pytest.approx(expected.leap_saving)


@pytest.mark.parametrize(
    "extra, problem, fix",
    [
        (["--gpu", "v100"], "unknown GPU 'v100'", "--gpu h200, h100, a100, l4"),
        (["--image-size", "60"], "not a multiple of the teacher's patch size 16", "--image_size 48 or 64"),
        (["--student", "vit-nanoo"], "unknown model 'vit-nanoo'", "vit-nano"),
        (["--batch-size", "100000000", "--gpu", "l4"], "more than 90% of the L4", "--batch_size"),
        (["--mfu", "35"], "MFU must be a fraction", "--mfu 0.4"),
    ],
)
def test_bad_input_is_an_error_and_a_fix(capsys, extra, problem, fix):
    base = ["plan", "--teacher", "vit-nano", "--student", "vit-nano", "--image-size", "64", "--images", "40"]
    assert main([*base, *extra]) == 2
    err = capsys.readouterr().err
    assert f"error: {problem}" in err or (problem in err and "error:" in err)
    assert "fix:" in err and fix in err and "Traceback" not in err


def test_training_images_of_a_builtin_and_of_known_sets():
    assert training_images("imagenet-1k") == 1_281_167
    assert training_images("ImageNet-100") == 126_689
    if any(d.name == "fashion-mnist" and d.available for d in builtin_datasets()):
        assert training_images("fashion-mnist") == 60_000
    with pytest.raises(LeapkdError):
        training_images("no-such-set")


def test_requests_are_checked_before_counting():
    with pytest.raises(LeapkdError, match="unknown GPU"):
        PlanRequest(**{**TINY, "gpu": "tpu"})
    with pytest.raises(LeapkdError, match="MFU must be a fraction"):
        estimate_plan(PlanRequest(**TINY), mfu=0.0)
    with pytest.raises(LeapkdError, match="whole number"):
        PlanRequest(**{**TINY, "epochs": 0})
