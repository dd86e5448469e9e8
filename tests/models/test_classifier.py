"""A token-family model (ViT, DeiT, DINOv2, Eva, CaiT) built with its classifier: its logits from
leapkd's last level are timm's."""

import pytest
import torch

from leapkd.models import load_backbone


@pytest.mark.parametrize(
    "name", ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "vit_small_patch14_reg4_dinov2",
             "eva02_tiny_patch14_224", "cait_xxs24_224"]
)  # fmt: skip
def test_classify_from_the_last_level_is_the_models_own_forward(name):
    size = 28 if "14" in name else 32
    model = load_backbone(name, size, model_kwargs={"num_classes": 10, "depth": 2}).eval()
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        logits = model.classify(model.forward_to(images, model.num_levels))
        assert model.num_classes == 10 and torch.allclose(logits, model.model(images), atol=1e-5)


def test_a_headless_model_has_no_classes():
    assert load_backbone("vit-nano", 32).num_classes == 0
    assert load_backbone("resnet18", 32, model_kwargs={"num_classes": 10}).num_classes == 0  # not exposed for CNNs


def test_a_weight_file_with_a_head_loads_the_head_too(tmp_path):
    from safetensors.torch import save_file

    kwargs = {"num_classes": 10, "depth": 2}
    source = load_backbone("vit_tiny_patch16_224", 32, model_kwargs=kwargs)
    save_file(source.model.state_dict(), tmp_path / "w.safetensors")
    headed = load_backbone("vit_tiny_patch16_224", 32, weights=tmp_path / "w.safetensors", model_kwargs=kwargs)
    assert torch.equal(headed.model.head.weight, source.model.head.weight)
    headless = load_backbone("vit_tiny_patch16_224", 32, weights=tmp_path / "w.safetensors", model_kwargs={"depth": 2})
    assert headless.num_classes == 0  # the same file, its head left out
