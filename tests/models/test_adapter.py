import pytest
import torch
from torch import nn

from leapkd.models import Backbone, flatten_blocks, load_backbone


def count_block_calls(backbone: Backbone, images: torch.Tensor, block: int) -> int:
    calls = []
    handles = [b.register_forward_hook(lambda *_: calls.append(1)) for b in backbone.blocks]
    try:
        with torch.no_grad():
            backbone.forward_to(images, block)
    finally:
        for h in handles:
            h.remove()
    return len(calls)


@pytest.fixture(scope="module")
def nano() -> Backbone:
    return load_backbone("vit-nano", 56, patch_size=14).eval()


@pytest.mark.parametrize("block", [1, 3, 6])
def test_early_exit_runs_exactly_b_blocks(nano: Backbone, block: int) -> None:
    assert count_block_calls(nano, torch.randn(2, 3, 56, 56), block) == block


def test_early_exit_equals_intermediate_of_full_pass(nano: Backbone) -> None:
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        all_blocks = nano.forward_blocks(x, range(1, nano.num_blocks + 1))
        # timm's own tap of the same blocks, normed with the final norm
        final, timm_taps = nano.vit.forward_intermediates(
            x, indices=list(range(nano.num_blocks)), norm=True, output_fmt="NLC", return_prefix_tokens=True
        )
        for b in range(1, nano.num_blocks + 1):
            early = nano.forward_to(x, b)
            assert torch.equal(early, all_blocks[b])
            spatial, prefix = timm_taps[b - 1]
            torch.testing.assert_close(nano.patch_tokens(early), spatial)
            torch.testing.assert_close(early[:, :1], prefix)
        torch.testing.assert_close(nano(x), nano.vit.forward_features(x))


def test_facts(nano: Backbone) -> None:
    assert nano.num_blocks == 6
    assert nano.embed_dim == 128
    assert nano.grid_size == (4, 4)
    assert nano.num_prefix_tokens == 1
    tokens = nano.embed(torch.randn(1, 3, 56, 56))
    assert tokens.shape == (1, 1 + 16, 128)
    assert nano.patch_tokens(tokens).shape == (1, 16, 128)


def test_register_tokens_are_prefix() -> None:
    reg = load_backbone("vit_small_patch14_reg4_dinov2", 56)
    assert reg.num_prefix_tokens == 5
    with torch.no_grad():
        out = reg.forward_to(torch.randn(1, 3, 56, 56), 2)
    assert reg.patch_tokens(out).shape == (1, 16, 384)


def test_block_out_of_range(nano: Backbone) -> None:
    with pytest.raises(ValueError, match="outside 1..6"):
        nano.forward_to(torch.randn(1, 3, 56, 56), 7)
    with pytest.raises(ValueError):
        nano.forward_to(torch.randn(1, 3, 56, 56), 0)


def test_flatten_blocks_skips_identity_padding_in_chunks() -> None:
    a, b, c = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)
    chunked = nn.ModuleList([nn.Sequential(a, b, nn.Identity()), nn.Sequential(nn.Identity(), nn.Identity(), c)])
    assert flatten_blocks(chunked) == [a, b, c]
