"""FLOP accounting: attention is counted, per-depth teacher costs, the ledger."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import leapkd.accounting as accounting
from leapkd.accounting import FlopsLedger, count_flops, student_step_flops, teacher_flops_by_depth
from leapkd.models import Backbone, load_backbone

BATCH = 2


@pytest.fixture(scope="module")
def nano() -> Backbone:
    torch.manual_seed(0)
    return load_backbone("vit-nano", 56, patch_size=14).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(BATCH, 3, 56, 56)


def _set_fused(model: Backbone, fused: bool) -> None:
    for block in model.level_modules():
        block.attn.fused_attn = fused


def _shape(model: Backbone) -> tuple[int, int, int]:
    """(B, N, D): batch, tokens incl. prefix, width."""
    return BATCH, model.grid[0] * model.grid[1] + model.num_prefix_tokens, model.width


def test_registration_is_idempotent() -> None:
    importlib.reload(accounting)  # would raise "duplicate registrations" otherwise
    assert accounting._register_attention_formulas() == []
    cpu_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    assert cpu_flash in torch.utils.flop_counter.flop_registry


@pytest.mark.parametrize(
    "kernel",
    [
        "_scaled_dot_product_flash_attention_backward",
        "_scaled_dot_product_efficient_attention_backward",
        "_scaled_dot_product_cudnn_attention_backward",
    ],
)
def test_gpu_attention_backward_is_counted_with_the_cpu_rule(kernel: str) -> None:
    """torch's own formulas for the CUDA kernels' backward count 2.5x the forward (they
    include recomputing QK^T); leapkd's rule is 2x on every device, so a GPU run and a CPU
    run of the same step report the same FLOPs."""
    op = getattr(torch.ops.aten, kernel)
    formula = torch.utils.flop_counter.flop_registry[op]
    q = (2, 6, 50, 64)  # (B, H, N, d)
    forward = torch.utils.flop_counter.sdpa_flop_count(q, q, q)
    assert formula(q, q, q, q) == 2 * forward == 8 * 2 * 6 * 50 * 50 * 64
    cpu = torch.utils.flop_counter.flop_registry[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward]
    assert cpu(q, q, q, q) == formula(q, q, q, q)


def test_fused_attention_runs_the_cpu_kernel_and_is_counted(nano: Backbone, images: torch.Tensor) -> None:
    _set_fused(nano, True)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        nano.level_modules()[0](nano.stem(images).tokens())
    ops = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    b, n, d = _shape(nano)
    assert ops["aten._scaled_dot_product_flash_attention_for_cpu"] == 4 * b * n * n * d


def test_block_flops_match_the_analytic_count(nano: Backbone, images: torch.Tensor) -> None:
    b, n, d = _shape(nano)
    attn = 2 * b * n * d * 3 * d + 4 * b * n * n * d + 2 * b * n * d * d
    mlp = 2 * (2 * b * n * d * 4 * d)
    for fused in (True, False):
        _set_fused(nano, fused)
        with torch.no_grad():
            _, per_module = count_flops(lambda: nano(images))
        for i in range(nano.num_levels):
            assert per_module[f"TokenBackbone.model.blocks.{i}.attn"] == attn
            assert per_module[f"TokenBackbone.model.blocks.{i}"] == attn + mlp
    _set_fused(nano, True)


def test_fused_and_explicit_attention_count_the_same(nano: Backbone, images: torch.Tensor) -> None:
    totals = {}
    for fused in (True, False):
        _set_fused(nano, fused)
        with torch.no_grad():
            forward, _ = count_flops(lambda: nano(images))
        step = student_step_flops(lambda: nano(images).square().mean())
        totals[fused] = (forward, step)
    _set_fused(nano, True)
    assert totals[True] == totals[False]
    forward, step = totals[True]
    assert step > 2 * forward  # backward counted, sdpa backward included


def test_sdpa_backward_is_twice_the_forward(nano: Backbone, images: torch.Tensor) -> None:
    _set_fused(nano, True)
    x = nano.stem(images).tokens().detach().requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        nano.level_modules()[0](x).sum().backward()
    ops = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    b, n, d = _shape(nano)
    assert ops["aten._scaled_dot_product_flash_attention_for_cpu_backward"] == 8 * b * n * n * d


def test_student_step_flops_leaves_no_gradients(nano: Backbone, images: torch.Tensor) -> None:
    nano.zero_grad(set_to_none=True)
    flops = student_step_flops(lambda: nano(images).square().mean())
    assert flops > 0
    assert all(p.grad is None for p in nano.parameters())
    # Gradients that existed before are restored, not dropped or accumulated into.
    nano(images).mean().backward()
    before = [p.grad.clone() for p in nano.parameters()]
    assert student_step_flops(lambda: nano(images).square().mean()) == flops
    assert all(torch.equal(p.grad, g) for p, g in zip(nano.parameters(), before))
    nano.zero_grad(set_to_none=True)


def test_student_step_flops_keeps_the_rng_state(nano: Backbone, images: torch.Tensor) -> None:
    state = torch.get_rng_state()
    student_step_flops(lambda: (nano(images) + torch.randn(1)).square().mean())
    assert torch.equal(torch.get_rng_state(), state)
    nano.zero_grad(set_to_none=True)


def test_student_step_flops_rejects_a_non_scalar() -> None:
    w = torch.ones(3, requires_grad=True)
    with pytest.raises(ValueError, match="scalar"):
        student_step_flops(lambda: w * 2)


def test_teacher_flops_by_depth_matches_direct_counts(nano: Backbone, images: torch.Tensor) -> None:
    table = teacher_flops_by_depth(nano, images)
    assert len(table) == nano.num_levels
    assert all(a < b for a, b in zip(table, table[1:]))
    with torch.no_grad():
        for b in (1, 2, nano.num_levels - 1, nano.num_levels):
            assert table[b - 1] == count_flops(lambda b=b: nano.forward_to(images, b))[0]
        assert table[-1] == count_flops(lambda: nano(images))[0]
    # Equal per-block steps: the teacher cost is affine in b (embedding + b blocks).
    steps = {b - a for a, b in zip(table, table[1:])}
    assert len(steps) == 1 and table[0] > steps.pop()


def test_ledger_saving_by_hand() -> None:
    table = [30, 50, 70, 90]  # embedding 10 + 20 per block
    ledger = FlopsLedger(table, student_step=40)
    depths = [1, 1, 2, 3, 4, 4]
    for b in depths:
        ledger.add_step(b)
    ledger.add_step(4, extra_teacher_flops=90)  # e.g. a calibration pass
    teacher = 30 + 30 + 50 + 70 + 90 + 90 + 90 + 90
    assert ledger.teacher_flops == teacher
    assert ledger.student_flops == 7 * 40
    assert ledger.baseline_flops == 7 * (90 + 40)
    assert ledger.saving == pytest.approx(1 - (teacher + 280) / 910)
    assert ledger.summary().model_dump() == {
        "teacher_flops": teacher,
        "student_flops": 280,
        "baseline_flops": 910,
        "flops_saving": pytest.approx(1 - 820 / 910),
    }
    assert ledger.batches == 7

    baseline = FlopsLedger(table, student_step=40)
    for _ in depths:
        baseline.add_step(4)
    assert baseline.saving == 0.0
    assert FlopsLedger(table, 40).saving == 0.0
    with pytest.raises(ValueError):
        ledger.add_step(5)


def test_ledger_state_round_trip() -> None:
    table = [30, 50, 70, 90]
    first = FlopsLedger(table, student_step=40)
    for b in (1, 2, 2):
        first.add_step(b)
    state = first.state_dict()
    assert all(type(v) is int for v in state.values())
    resumed = FlopsLedger(table, student_step=40)
    resumed.load_state_dict(state)
    for ledger in (first, resumed):
        ledger.add_step(3)
    assert resumed.summary() == first.summary()


@pytest.mark.parametrize("family", ["swin", "cait", "resnet"])
def test_teacher_flops_by_depth_of_other_families(family: str) -> None:
    """Every depth's cost is what an early-exit pass costs: Swin's patch merging and CaiT's
    class attention included, counted on one image and scaled to the batch."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "models"))
    from families import FAMILIES

    source, size, build = FAMILIES[family]
    model = load_backbone(source, size, **build).eval()
    x = torch.randn(3, 3, size, size)
    table = teacher_flops_by_depth(model, x)
    with torch.no_grad():
        for b in range(1, model.num_levels + 1):
            assert table[b - 1] == count_flops(lambda b=b: model.forward_to(x, b))[0]
    assert all(a < b for a, b in zip(table, table[1:]))
