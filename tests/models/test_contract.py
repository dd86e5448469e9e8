"""The feature contract, the same checks for tiny random-init models of every family."""

import pytest
import torch
from families import FAMILIES

from leapkd.models import Backbone, load_backbone, load_student_file, save_student_file


@pytest.fixture(scope="module", params=list(FAMILIES))
def model(request) -> tuple[str, Backbone]:
    source, size, build = FAMILIES[request.param]
    torch.manual_seed(0)
    return request.param, load_backbone(source, size, **build).eval()


def images(backbone: Backbone, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, backbone.image_size, backbone.image_size, generator=torch.Generator().manual_seed(1))


def levels_run(backbone: Backbone, x: torch.Tensor, level: int) -> int:
    calls = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in backbone.level_modules()]
    try:
        with torch.no_grad():
            backbone.forward_to(x, level)
    finally:
        for h in hooks:
            h.remove()
    return len(calls)


def test_early_exit_runs_exactly_the_levels_asked(model):
    _, bb = model
    x = images(bb)
    for level in sorted({1, (bb.num_levels + 1) // 2, bb.num_levels}):
        assert levels_run(bb, x, level) == level


def test_early_exit_equals_the_full_pass(model):
    _, bb = model
    x = images(bb)
    with torch.no_grad():
        full = bb.forward_levels(x, range(1, bb.num_levels + 1))
        for level in range(1, bb.num_levels + 1):
            early = bb.forward_to(x, level)
            torch.testing.assert_close(early.patches, full[level].patches)
            if early.prefix is not None:
                torch.testing.assert_close(early.prefix, full[level].prefix)


def test_levels_describe_what_comes_out(model):
    _, bb = model
    x = images(bb, 3)
    with torch.no_grad():
        outs = bb.forward_levels(x, range(1, bb.num_levels + 1))
        for b, lv in enumerate(bb.levels, start=1):
            f = outs[b]
            assert f.patches.shape == (3, lv.grid[0] * lv.grid[1], lv.width) and f.grid == lv.grid
            assert (f.prefix is None and lv.prefix == 0) or f.prefix.shape == (3, lv.prefix, lv.width)
            assert f.as_map().shape == (3, lv.width, *lv.grid)
        assert bb.embedding(x).shape == (3, bb.width)
        assert bb(x).shape == (3, bb.num_prefix_tokens + bb.grid[0] * bb.grid[1], bb.width)


def test_student_file_round_trip(model, tmp_path):
    name, bb = model
    path = save_student_file(bb, tmp_path / f"{name}.safetensors")
    again = load_student_file(path).eval()
    x = images(bb)
    with torch.no_grad():
        torch.testing.assert_close(again(x), bb(x), rtol=0, atol=0)
    assert again.describe() == bb.describe()


def test_token_families_match_timms_own_intermediates():
    """The un-normalised levels are timm's forward_intermediates, normalised by the final norm."""
    source, size, build = FAMILIES["dinov2-registers"]
    bb = load_backbone(source, size, **build).eval()
    x = images(bb)
    with torch.no_grad():
        ours = bb.forward_levels(x, range(1, 4))
        taps = bb.model.forward_intermediates(x, norm=True, output_fmt="NLC", return_prefix_tokens=True,
                                              intermediates_only=True)  # fmt: skip
        for b, (spatial, prefix) in enumerate(taps, start=1):
            torch.testing.assert_close(ours[b].patches, spatial)
            torch.testing.assert_close(ours[b].prefix, prefix)
        torch.testing.assert_close(bb(x), bb.model.forward_features(x))


def test_swin_stage_ends_are_timms_stage_outputs():
    source, size, build = FAMILIES["swin"]
    bb = load_backbone(source, size, **build).eval()
    x = images(bb)
    stage_ends = [1, 2, 4, 5]  # depths (1, 1, 2, 1)
    with torch.no_grad():
        ours = bb.forward_levels(x, stage_ends, norm=False)
        stages = bb.model.forward_intermediates(x, norm=False, intermediates_only=True)  # NCHW per stage
    for level, stage in zip(stage_ends, stages):
        torch.testing.assert_close(ours[level].as_map(), stage)
    assert [lv.width for lv in bb.levels] == [24, 48, 96, 96, 192]


def test_cnn_levels_are_timms_feature_stages():
    source, size, build = FAMILIES["resnet"]
    bb = load_backbone(source, size, **build).eval()
    x = images(bb)
    with torch.no_grad():
        ours = bb.forward_levels(x, range(1, 6), norm=False)
        stages = bb.model.forward_intermediates(x, intermediates_only=True)
    for level, stage in enumerate(stages, start=1):
        torch.testing.assert_close(ours[level].as_map(), stage)
    assert [lv.width for lv in bb.levels] == [64, 64, 128, 256, 512]
    assert bb.levels[0].prefix == 0 and bb.embedding(x).shape == (2, 512)


def test_cait_has_its_cls_at_the_last_level_only():
    source, size, build = FAMILIES["cait"]
    bb = load_backbone(source, size, **build).eval()
    assert [lv.prefix for lv in bb.levels] == [0, 0, 0, 1]
    with torch.no_grad():
        x = images(bb)
        assert bb.forward_to(x, 3).prefix is None
        last = bb.forward_to(x, 4)
        torch.testing.assert_close(last.tokens(), bb.model.forward_features(x))  # CLS from class attention


def test_level_out_of_range():
    bb = load_backbone("vit-nano", 32)
    with pytest.raises(ValueError, match="outside 1..6"):
        bb.forward_to(torch.randn(1, 3, 32, 32), 7)


def test_a_cnn_has_no_patch_projection():
    from leapkd.errors import LeapkdError

    with pytest.raises(LeapkdError, match="no patch-projection conv"):
        load_backbone("resnet18", 32).patch_projection(torch.randn(1, 3, 32, 32))
