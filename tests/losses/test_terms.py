"""Every loss term: zero when the two sides agree, gradients reach what it trains, float32 out."""

import pytest
import torch

from leapkd.losses import ClsMSE, CrossEntropy, FeatureMSE, LogitKD, PatchEmbedLoss, SpectralLoss
from leapkd.models import Features


def _terms():
    """(term, inputs that agree, inputs that differ); the first input is what trains."""
    a, b = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    cls_a, cls_b = torch.randn(2, 8), torch.randn(2, 8)
    logits, labels = torch.tensor([[30.0, -30.0], [-30.0, 30.0]]), torch.tensor([0, 1])
    blocks = {1: Features(torch.randn(2, 4, 8), (2, 2), torch.randn(2, 1, 8))}  # CLS + 2 x 2 patches
    other = {1: Features(torch.randn(2, 4, 8), (2, 2))}
    return [
        (FeatureMSE(), (a, a.clone()), (a, b)),
        (ClsMSE(), (cls_a, cls_a.clone()), (cls_a, cls_b)),
        (CrossEntropy(), (logits, labels), (logits, labels.flip(0))),
        (LogitKD(temperature=2.0), (logits, logits.clone()), (logits, logits.flip(0))),
        (SpectralLoss(), (blocks, dict(blocks), [(1, 1)]), (blocks, other, [(1, 1)])),
    ]


@pytest.mark.parametrize("term,same,different", _terms(), ids=lambda x: getattr(x, "name", ""))
def test_zero_when_identical_positive_otherwise(term, same, different):
    assert term(*same).item() == pytest.approx(0.0, abs=1e-12)
    assert term(*different).item() > 0


@pytest.mark.parametrize("term,same,different", _terms(), ids=lambda x: getattr(x, "name", ""))
def test_gradients_flow_to_the_student_side(term, same, different):
    first = different[0]
    if isinstance(first, dict):
        leaf = first[1].patches.clone().requires_grad_(True)
        first = {1: Features(leaf, first[1].grid, first[1].prefix)}
    else:
        first = leaf = first.clone().requires_grad_(True)
    term(first, *different[1:]).backward()
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0


@pytest.mark.parametrize("term,same,different", _terms(), ids=lambda x: getattr(x, "name", ""))
def test_bf16_inputs_give_a_float32_loss(term, same, different):
    def cast(x):
        if isinstance(x, dict):
            return {k: Features(cast(v.patches), v.grid) for k, v in x.items()}
        return x.bfloat16() if isinstance(x, torch.Tensor) and x.is_floating_point() else x

    value = term(*(cast(x) for x in different))
    assert value.dtype == torch.float32 and value.ndim == 0
    assert value.item() == pytest.approx(term(*different).item(), rel=0.05)


def test_patch_embedding_loss_reaches_zero_for_a_student_identical_to_the_teacher():
    """The reference's --embed-loss: its own projector and affine LayerNorms on both sides."""
    torch.manual_seed(0)
    embed = torch.randn(4, 9, 16)  # the same raw patch projections on both sides
    loss = PatchEmbedLoss(16, 16)
    with torch.no_grad():
        loss.projector.weight.copy_(torch.eye(16))
        loss.projector.bias.zero_()
    assert loss(embed, embed).item() == 0.0  # identical inputs through identical norms

    loss.projector.reset_parameters()  # from a random projector, training gets there
    assert len(list(loss.parameters())) == 6  # P_e, LN_s and LN_t: weight and bias each, all trained
    opt = torch.optim.Adam(loss.parameters(), lr=1e-2)
    start = loss(embed, embed).item()
    for _ in range(600):
        opt.zero_grad()
        value = loss(embed, embed)
        value.backward()
        opt.step()
    assert value.item() < 1e-3 * start
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert loss(embed, embed).dtype == torch.float32
