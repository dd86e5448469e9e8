"""A model built with its classifier: its logits from leapkd's raw last level are timm's own, for
every family that exposes the head; a weight file without the head leaves the backbone alone."""

import pytest
import torch
from safetensors.torch import save_file

from leapkd.models import load_backbone

TOKENS = ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "vit_small_patch14_reg4_dinov2",
          "eva02_tiny_patch14_224", "cait_xxs24_224"]  # fmt: skip
SWIN = ("swin_tiny_patch4_window7_224", {"embed_dim": 24, "num_heads": [1, 2, 2, 4], "depths": [1, 1, 2, 1]}, 64)
CNNS = ["resnet18", "convnext_atto", "mobilenetv3_small_100", "regnetx_002"]


def _cases():
    yield from ((name, {"depth": 2}, 28 if "14" in name else 32) for name in TOKENS)
    yield SWIN
    yield from ((name, {}, 64) for name in CNNS)


@pytest.mark.parametrize("name,kwargs,size", list(_cases()), ids=lambda v: v if isinstance(v, str) else "")
def test_classify_from_the_last_level_is_the_models_own_forward(name, kwargs, size):
    model = load_backbone(name, size, model_kwargs={"num_classes": 10, **kwargs}).eval()
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        last = model.forward_levels(images, [model.num_levels], norm=False)[model.num_levels]
        logits = model.classify(last)
        assert model.num_classes == 10 and torch.allclose(logits, model.model(images), atol=1e-5)


def test_a_cnn_with_a_convolution_after_its_last_stage_exposes_no_classifier():
    """EfficientNet's head takes conv_head(last stage), which no level holds."""
    model = load_backbone("efficientnet_b0", 64, model_kwargs={"num_classes": 10})
    assert model.num_classes == 0
    with pytest.raises(NotImplementedError, match="exposes no classifier"):
        last = model.forward_levels(torch.randn(1, 3, 64, 64), [model.num_levels], norm=False)[model.num_levels]
        model.classify(last)


def test_a_headless_model_has_no_classes():
    assert load_backbone("vit-nano", 32).num_classes == 0
    assert load_backbone("resnet18", 32).num_classes == 0


@pytest.mark.parametrize("name,kwargs,size", [("vit_tiny_patch16_224", {"depth": 2}, 32), SWIN, ("resnet18", {}, 64)])
def test_a_weight_file_with_a_head_loads_the_head_and_one_without_leaves_the_backbone(name, kwargs, size, tmp_path):
    source = load_backbone(name, size, model_kwargs={"num_classes": 10, **kwargs})
    save_file(source.model.state_dict(), tmp_path / "w.safetensors")
    headed = load_backbone(name, size, weights=tmp_path / "w.safetensors", model_kwargs={"num_classes": 10, **kwargs})
    assert headed.num_classes == 10
    pairs = zip(headed.model.state_dict().values(), source.model.state_dict().values())
    assert all(torch.equal(a, b) for a, b in pairs)
    headless = load_backbone(name, size, weights=tmp_path / "w.safetensors", model_kwargs=kwargs)
    assert headless.num_classes == 0  # the same file, its head left out
    backbone = load_backbone(name, size, model_kwargs=kwargs)
    save_file(backbone.model.state_dict(), tmp_path / "b.safetensors")
    asked = load_backbone(name, size, weights=tmp_path / "b.safetensors", model_kwargs={"num_classes": 10, **kwargs})
    assert asked.num_classes == 0  # a head asked for, the file holds none: the backbone alone, no random head


def test_a_downloaded_head_of_other_classes_is_dropped_not_kept_at_random(monkeypatch):
    """timm builds a head of the asked classes at random when the checkpoint's has others:
    leapkd keeps the pretrained backbone alone, so no random logits reach logit KD."""
    import timm

    from leapkd.models import registry

    real = timm.create_model

    def offline(name, pretrained=False, **kwargs):  # the weights as a download would give them
        model = real(name, pretrained=False, **kwargs)
        model.pretrained_cfg = {**model.pretrained_cfg, "num_classes": 1000}
        return model

    monkeypatch.setattr(registry.timm, "create_model", offline)
    kwargs = {"num_classes": 10, "depth": 2}
    assert not any(k.startswith("head.") for k in registry._download_pretrained("vit_tiny_patch16_224", kwargs))
    kept = registry._download_pretrained("vit_tiny_patch16_224", {"num_classes": 1000, "depth": 2})
    assert "head.weight" in kept  # the checkpoint's own classes: its head is pretrained


def test_a_file_whose_head_has_other_classes_says_so(tmp_path):
    from leapkd import LeapkdError

    source = load_backbone("vit_tiny_patch16_224", 32, model_kwargs={"num_classes": 7, "depth": 2})
    save_file(source.model.state_dict(), tmp_path / "w.safetensors")
    with pytest.raises(LeapkdError) as err:
        load_backbone("vit_tiny_patch16_224", 32, weights=tmp_path / "w.safetensors",
                      model_kwargs={"num_classes": 10, "depth": 2})  # fmt: skip
    assert "the file's classifier has other classes" in err.value.fix
