"""What the LEAP reference's training needs: LARS, mixup, warm-up in epochs, trunc-normal projectors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from leapkd import distill
from leapkd.data.batch_augment import BatchAugment, mix_images
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
    from leapkd.data import batch_augment
    from leapkd.methods.leap import Leap

    mixed: list[torch.Tensor] = []
    real_mix, real_targets, real_first = batch_augment.mix_images, Leap.targets, Leap.on_first_batch
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

    monkeypatch.setattr(batch_augment, "mix_images", mix)
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


def test_random_erasing_erases_whole_images_at_probability_one():
    torch.manual_seed(0)
    images = torch.zeros(4, 3, 16, 16)
    assert torch.equal(BatchAugment(erasing=0.0)(images), images)
    erased = BatchAugment(erasing=1.0)(images)
    changed = (erased != 0).flatten(1).any(1)
    assert changed.all() and torch.equal(images, torch.zeros(4, 3, 16, 16))  # a copy is erased, not the input


def test_repeated_augmentation_gives_each_image_its_copies_with_their_own_keys():
    from leapkd.data.sampling import EpochSeededSampler

    plain = list(EpochSeededSampler(12, seed=0, batch_size=4))
    assert {key for key, _ in plain} == {0} and sorted(i for _, i in plain) == list(range(12))
    sampler = EpochSeededSampler(12, seed=0, batch_size=4, repeats=3)
    sampler.set_epoch(2)
    items = list(sampler)
    assert len(items) == 12
    indices = [i for _, i in items]
    assert all(indices[j] == indices[j + 1] == indices[j + 2] for j in range(0, 12, 3))  # 4 images, 3 copies each
    assert [key for key, _ in items] == [6, 7, 8] * 4  # epoch 2 * 3 + copy: a different augmentation per copy
    assert indices[::3] == [i for _, i in plain][:4] or len(set(indices)) == 4


def test_randaugment_from_a_timm_string():
    from PIL import Image

    from leapkd.data.sampling import SeededItems
    from leapkd.data.transforms import Augmentation, build_transform

    image = Image.fromarray(torch.randint(0, 256, (40, 40, 3), dtype=torch.uint8).numpy())
    ra = Augmentation(randaugment="rand-m9-mstd0.5-inc1")
    items = {}
    for key in range(6):  # the same (epoch, index) key gives the same augmented image, others differ
        transform = build_transform(32, True, augmentation=ra, output="uint8")
        seeded = SeededItems(_Transformed(image, transform), seed=0, python_rngs=True)
        items[key] = seeded[(key, 0)][0]
        assert torch.equal(items[key], seeded[(key, 0)][0])
        plain = SeededItems(_Transformed(image, build_transform(32, True, output="uint8")), seed=0)[(key, 0)][0]
        items[key, "plain"] = plain
    assert any(not torch.equal(items[k], items[k, "plain"]) for k in range(6))  # RandAugment changed something
    with pytest.raises(LeapkdError, match="is not a timm RandAugment string"):
        build_transform(32, True, augmentation=Augmentation(randaugment="rand-q9"))


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_the_crop_and_randaugment_resample_as_asked(interpolation):
    """SpectralKD trains with --train-interpolation bicubic: its crop and RandAugment both bicubic
    (timm would otherwise draw RandAugment's resampling at random)."""
    from PIL import Image
    from torchvision.transforms import v2

    from leapkd.data.transforms import Augmentation, randaugment

    aug = Augmentation(randaugment="rand-m9-mstd0.5-inc1", interpolation=interpolation)
    crop = aug.geometry(32)[0]
    assert isinstance(crop, v2.RandomResizedCrop) and crop.interpolation.value == interpolation
    pil = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[interpolation]
    ops = randaugment(aug.randaugment, 32, interpolation).ops
    assert ops and all(op.kwargs["resample"] == pil for op in ops)
    ra = [step for step in aug.photometric(32) if hasattr(step, "ops")]
    assert len(ra) == 1 and all(op.kwargs["resample"] == pil for op in ra[0].ops)


class _Transformed:
    """One image seen through `transform` (a one-item dataset)."""

    classes = ["x"]
    targets = [0]

    def __init__(self, image, transform):
        self.image, self.transform = image, transform

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return self.transform(self.image), 0


def test_deit_augmentation_trains(tiny):
    r = distill(name="deit-aug", method="spectralkd", ce_weight=0.1, kd_weight=0.9, label_smoothing=0.1,
                aug_randaugment="rand-m9-mstd0.5-inc1", aug_erasing=0.25, repeated_augmentation=3, max_steps=3,
                **tiny)  # fmt: skip
    assert r.summary.steps == 3


def test_parameter_groups_follow_each_models_own_no_weight_decay():
    from leapkd.engine.optimizers import decay_split
    from leapkd.models import load_backbone

    vit = load_backbone("vit_small_patch14_dinov2", 28, model_kwargs={"embed_dim": 32, "num_heads": 2, "depth": 2})
    swin = load_backbone("swin_tiny_patch4_window7_224", 64, model_kwargs={"embed_dim": 24, "num_heads": [1, 2, 2, 4]})
    head = nn.Linear(32, 5)
    for model in (vit, swin):
        names = {id(p): n for n, p in model.named_parameters()}
        decay, no_decay = decay_split((model, head))
        kept = {names.get(id(p), "head") for p in no_decay}
        assert all(p.ndim >= 2 for p in decay)
        assert any(p is head.weight for p in decay) and any(p is head.bias for p in no_decay)
        # timm's list (ViT's tokens and pos_embed, Swin's bias tables), of the parameters this model has
        own = {f"model.{n}" for n in model.model.no_weight_decay()} & set(names.values())
        assert own and own <= kept
    assert any("relative_position_bias_table" in n for n, p in swin.named_parameters() if p.ndim >= 2)


def test_lars_neither_decays_nor_trust_scales_the_cls_token():
    """LightlyTrain puts cls_token and pos_embed in its no-weight-decay group, which lightly's LARS
    neither decays nor adapts: their update is plain SGD momentum."""
    from leapkd.models import load_backbone

    vit = load_backbone("vit_small_patch14_dinov2", 28, model_kwargs={"embed_dim": 32, "num_heads": 2, "depth": 1})
    cfg = load_config(None, {"optimizer": "lars", "weight_decay": 0.1, "lars_trust_coefficient": 0.001})
    opt = build_optimizer(cfg, (vit,), lr=0.5, fused=False)
    token, matrix = vit.model.cls_token, vit.model.blocks[0].attn.qkv.weight
    t0, m0 = token.detach().clone(), matrix.detach().clone()
    for p in vit.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    assert torch.allclose(token, t0 - 0.5 * torch.ones_like(t0))  # no trust ratio, no decay
    trust = 0.001 * m0.norm() / (torch.ones_like(m0).norm() + 0.1 * m0.norm() + 1e-8)
    assert torch.allclose(matrix, m0 - 0.5 * trust * (1 + 0.1 * m0), atol=1e-7)
