"""Every weight source loads back to identical outputs; bad input gets a clear error."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from leapkd import LeapkdError
from leapkd.models import load_backbone

SIZE = 56
DINO = "vit_small_patch14_dinov2"
DINO_REG = "vit_small_patch14_reg4_dinov2"


def _randomise(model: torch.nn.Module) -> None:
    """Give every weight (layer scales and norms too) random values so a wrong mapping shows."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def _features(backbone, x):
    with torch.no_grad():
        return backbone.eval()(x)


def test_timm_safetensors_and_pth_round_trip(tmp_path: Path) -> None:
    src = load_backbone(DINO_REG, SIZE)
    _randomise(src)
    x = torch.randn(2, 3, SIZE, SIZE)
    sd = src.model.state_dict()
    save_file(sd, tmp_path / "w.safetensors")
    torch.save({"state_dict": sd}, tmp_path / "w.pth")
    torch.save(sd, tmp_path / "w.bin")
    for name in ("w.safetensors", "w.pth", "w.bin"):
        loaded = load_backbone(DINO_REG, SIZE, weights=tmp_path / name)
        assert torch.equal(_features(loaded, x), _features(src, x)), name


def _to_hub_layout(timm_sd: dict, chunks: int = 0) -> dict:
    """timm DINOv2 (no registers) -> the official torch.hub checkpoint layout."""
    hub = {k: v.clone() for k, v in timm_sd.items()}
    hub["mask_token"] = torch.zeros(1, hub["cls_token"].shape[-1])
    if chunks:
        depth = 1 + max(int(k.split(".")[1]) for k in hub if k.startswith("blocks."))
        per = depth // chunks
        hub = {
            (f"blocks.{int(k.split('.')[1]) // per}.{k[len('blocks.') :]}" if k.startswith("blocks.") else k): v
            for k, v in hub.items()
        }
    return hub


@pytest.mark.parametrize("chunks", [0, 4])
def test_dinov2_hub_layout_round_trip(tmp_path: Path, chunks: int) -> None:
    src = load_backbone(DINO, SIZE)
    _randomise(src)
    torch.save(_to_hub_layout(src.model.state_dict(), chunks), tmp_path / "dinov2_vits14_pretrain.pth")
    loaded = load_backbone(DINO, SIZE, weights=tmp_path / "dinov2_vits14_pretrain.pth")
    x = torch.randn(2, 3, SIZE, SIZE)
    assert torch.equal(_features(loaded, x), _features(src, x))


def test_hub_layout_with_registers(tmp_path: Path) -> None:
    src = load_backbone(DINO_REG, SIZE)
    _randomise(src)
    sd = src.model.state_dict()
    hub = {k: v for k, v in sd.items() if k not in ("reg_token", "cls_token", "pos_embed")}
    # hub layout: registers named register_tokens, pos_embed carries a CLS position
    cls_pos = torch.randn(1, 1, sd["cls_token"].shape[-1]) * 0.1
    hub["register_tokens"] = sd["reg_token"]
    hub["cls_token"] = sd["cls_token"] - cls_pos
    hub["pos_embed"] = torch.cat([cls_pos, sd["pos_embed"]], dim=1)
    hub["mask_token"] = torch.zeros(1, sd["cls_token"].shape[-1])
    torch.save(hub, tmp_path / "reg.pth")
    loaded = load_backbone(DINO_REG, SIZE, weights=tmp_path / "reg.pth")
    x = torch.randn(2, 3, SIZE, SIZE)
    torch.testing.assert_close(_features(loaded, x), _features(src, x), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"num_register_tokens": 4},
        {"use_swiglu_ffn": True},
    ],
    ids=["plain", "registers", "swiglu"],
)
@pytest.mark.parametrize("size", [SIZE, 84])
def test_hf_dinov2_directory(tmp_path: Path, extra: dict, size: int) -> None:
    transformers = pytest.importorskip("transformers")
    common = dict(
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=256,
        patch_size=14,
        image_size=SIZE,
        layerscale_value=0.5,
        **extra,
    )
    if "num_register_tokens" in extra:
        config = transformers.Dinov2WithRegistersConfig(**common)
        hf = transformers.Dinov2WithRegistersModel(config)
    else:
        config = transformers.Dinov2Config(**common)
        hf = transformers.Dinov2Model(config)
    hf.eval()
    _randomise(hf)
    hf.save_pretrained(tmp_path / "hf")
    ours = load_backbone(str(tmp_path / "hf"), size)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = hf(pixel_values=x).last_hidden_state
    assert ours.num_prefix_tokens == 1 + extra.get("num_register_tokens", 0)
    torch.testing.assert_close(_features(ours, x), expected, atol=1e-5, rtol=1e-4)


# ----- errors ---------------------------------------------------------------------------


def test_unknown_model_names_closest() -> None:
    with pytest.raises(LeapkdError) as err:
        load_backbone("vit_smal_patch14_dinov2", SIZE)
    assert "unknown model 'vit_smal_patch14_dinov2'" in str(err.value)
    assert "vit_small_patch14_dinov2" in str(err.value)


def test_missing_weight_file(tmp_path: Path) -> None:
    with pytest.raises(LeapkdError, match="does not exist"):
        load_backbone("vit-nano", SIZE, patch_size=14, weights=tmp_path / "nope.safetensors")


def test_weight_file_of_wrong_architecture_lists_keys(tmp_path: Path) -> None:
    save_file(load_backbone("vit-nano", SIZE, patch_size=14).model.state_dict(), tmp_path / "nano.safetensors")
    with pytest.raises(LeapkdError) as err:
        load_backbone(DINO, SIZE, weights=tmp_path / "nano.safetensors")
    msg = str(err.value)
    assert "do not fit" in msg and "missing" in msg and "shape mismatch" in msg
    assert "the file has 6 blocks of width 128, the model 12 of width 384" in msg
    assert "Fix:" in msg


def test_corrupt_weight_file(tmp_path: Path) -> None:
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(LeapkdError, match="cannot read weight file"):
        load_backbone("vit-nano", SIZE, patch_size=14, weights=tmp_path / "bad.pth")


def test_a_model_without_levels_is_refused() -> None:
    import leapkd

    @leapkd.register_model("no-levels")
    class NoLevels(torch.nn.Module):
        def __init__(self, image_size: int) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3)

    with pytest.raises(LeapkdError, match="cannot read levels from"):
        load_backbone("no-levels", SIZE)
