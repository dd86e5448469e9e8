"""What the LEAP reference's training needs: LARS, mixup, warm-up in epochs, trunc-normal projectors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from leapkd import distill
from leapkd.data.mixup import mix_images
from leapkd.engine.accumulation import warmup_steps
from leapkd.engine.optimizers import build_optimizer
from leapkd.errors import LeapkdError
from leapkd.methods import load_config
from leapkd.methods.align import projector


def test_lars_step_equals_a_hand_computation():
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    cfg = load_config(
        None, {"optimizer": "lars", "weight_decay": 0.01, "momentum": 0.9, "lars_trust_coefficient": 0.02}
    )
    opt = build_optimizer(cfg, (layer,), lr=0.5, fused=False)
    grads = [(torch.randn(3, 4), torch.randn(3)) for _ in range(2)]
    w, b, buf_w, buf_b = w0.clone(), b0.clone(), None, None
    for gw, gb in grads:
        layer.weight.grad, layer.bias.grad = gw.clone(), gb.clone()
        opt.step()
        # the weight matrix: trust ratio (weight decay in it and in the update), then momentum
        trust = 0.02 * w.norm() / (gw.norm() + 0.01 * w.norm() + 1e-8)
        update = (gw + 0.01 * w) * trust
        buf_w = update if buf_w is None else 0.9 * buf_w + update
        w = w - 0.5 * buf_w
        # the bias (one dimension): neither trust ratio nor weight decay, momentum only
        buf_b = gb if buf_b is None else 0.9 * buf_b + gb
        b = b - 0.5 * buf_b
        assert torch.allclose(layer.weight, w, atol=1e-6) and torch.allclose(layer.bias, b, atol=1e-6)
    assert not torch.allclose(layer.weight, w0)


def test_adamw_is_the_default():
    cfg = load_config(None, {})
    assert isinstance(build_optimizer(cfg, (nn.Linear(2, 2),), lr=1e-3, fused=False), torch.optim.AdamW)


def test_mixup_is_the_references_formula_on_a_fixed_seed():
    images = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 3, 2, 2).clone()
    mixed = mix_images(images, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    lam = torch.rand((), generator=g).item()  # one lambda ~ U(0, 1) per batch, then a permutation
    perm = torch.randperm(6, generator=g)
    for i in range(6):
        assert torch.allclose(mixed[i], torch.full((3, 2, 2), lam * i + (1 - lam) * float(perm[i])))
    assert 0 < lam < 1 and not torch.equal(perm, torch.arange(6))


def test_teacher_and_student_see_the_same_mixed_batch_calibration_included(tiny, monkeypatch):
    from leapkd.engine import module
    from leapkd.methods.leap import Leap

    mixed: list[torch.Tensor] = []
    real_mix, real_targets, real_first = module.mix_images, Leap.targets, Leap.on_first_batch
    seen: dict[str, list[torch.Tensor]] = {"targets": [], "calibration": []}

    def mix(images, generator=None):
        mixed.append(real_mix(images, generator))
        return mixed[-1]

    def targets(self, teacher, images):
        seen["targets"].append(images)
        return real_targets(self, teacher, images)

    def first(self, teacher, student_output, images):
        seen["calibration"].append(images)
        return real_first(self, teacher, student_output, images)

    monkeypatch.setattr(module, "mix_images", mix)
    monkeypatch.setattr(Leap, "targets", targets)
    monkeypatch.setattr(Leap, "on_first_batch", first)
    distill(name="mix", mixup=True, max_steps=3, **tiny)
    assert len(mixed) == 3 and all(any(t is m for t in seen["targets"]) for m in mixed)
    assert seen["calibration"][0] is mixed[0]


def test_mixup_with_labels_is_refused():
    with pytest.raises(LeapkdError, match="mixup mixes images, not labels"):
        load_config(None, {"method": "spectralkd", "mixup": True, "ce_weight": 0.1})


@pytest.mark.parametrize(
    ("epochs", "batches", "accumulate", "expected"), [(None, 10, 1, 20), (1.5, 10, 2, 8), (0, 7, 1, 0)]
)
def test_warmup_in_epochs_counts_optimizer_steps(epochs, batches, accumulate, expected):
    cfg = load_config(None, {"warmup_epochs": epochs, "accumulate_grad_batches": accumulate})
    assert warmup_steps(SimpleNamespace(num_training_batches=batches), cfg) == expected  # type: ignore[arg-type]


def test_trunc_normal_projector_init():
    torch.manual_seed(0)
    head = projector(256, 512, "linear", "trunc_normal")
    assert isinstance(head, nn.Linear) and torch.count_nonzero(head.bias) == 0
    assert head.weight.std().item() == pytest.approx(0.02, rel=0.02)
    mlp = projector(64, 32, "mlp", "trunc_normal")
    assert all(torch.count_nonzero(m.bias) == 0 for m in mlp.modules() if isinstance(m, nn.Linear))
