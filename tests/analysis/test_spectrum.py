"""Spectral analysis: band binning, change ranking, pairs, mirror correlation, plots."""

from pathlib import Path

import pytest
import torch

from leapkd.analysis import (
    SpectrumResult,
    layer_change_scores,
    layer_spectra,
    mirror_correlation,
    propose_layer_pairs,
    save_spectrum_plots,
)
from leapkd.analysis.spectrum import radial_bands
from leapkd.models import load_backbone


@pytest.fixture(scope="module")
def half_identity() -> SpectrumResult:
    """vit-nano (6 blocks, 4x4 grid) whose blocks 1..3 pass their input through unchanged."""
    torch.manual_seed(0)
    model = load_backbone("vit-nano", 32, patch_size=8)
    with torch.no_grad():
        for block in model.level_modules()[:3]:
            for layer in (block.attn.proj, block.mlp.fc2):
                layer.weight.zero_()
                layer.bias.zero_()
    return layer_spectra(model, torch.randn(6, 3, 32, 32), batch_size=4)


def test_radial_bands() -> None:
    band, n = radial_bands(4, 4)  # ky in {0, 1, -2, -1}, kx in {0, 1, 2}; r_max = sqrt(8) -> band 3
    assert n == 4 and band.shape == (4, 3)
    assert band[0, 0] == 0 and band[2, 2] == 3 and band[1, 1] == 1  # sqrt(2) rounds to 1
    assert set(band.flatten().tolist()) == set(range(n))
    assert radial_bands(14, 14)[1] == 11


def test_result_shapes(half_identity: SpectrumResult) -> None:
    r = half_identity
    assert r.grid_bands.shape == (6, 4)
    assert r.layer_intensity.shape == r.channel_intensity.shape == (6,)
    assert (r.grid_bands > 0).all() and (r.channel_intensity > 0).all()
    assert r.model_name == "vit-nano"


def test_change_ranking_finds_random_blocks(half_identity: SpectrumResult) -> None:
    scores = layer_change_scores(half_identity)
    assert scores[:3].abs().max() < 1e-6  # identity blocks: same spectrum as their input
    assert scores[3:].min() > 1e-3
    assert propose_layer_pairs(half_identity, None, 3) == [(4, 4), (5, 5), (6, 6)]


def test_pairs_map_to_student_depth() -> None:
    # flat band profiles, so only the intensity term scores: blocks 2,3 -> 0, 4 -> 3/4, 5 -> 4/8,
    # 6 -> 0.5/8.5; block 1 (no embedding spectrum) is compared with block 2 -> 0
    teacher = SpectrumResult(torch.ones(6, 4), torch.tensor([1, 1, 1, 4, 8, 8.5]), torch.ones(6), "t")
    student = SpectrumResult(torch.ones(3, 4), torch.ones(3), torch.ones(3), "s")
    assert layer_change_scores(teacher).tolist() == pytest.approx([0, 0, 0, 0.75, 0.5, 0.5 / 8.5])
    # teacher 4 -> floor(4 * 3 / 6 + 0.5) = 2, teacher 5 -> floor(2.5 + 0.5) = 3 (halves round up)
    assert propose_layer_pairs(teacher, student, 2) == [(2, 4), (3, 5)]
    # teacher 6 -> student 3 is taken, so the next best (block 1, shallowest of the ties) -> 1
    assert propose_layer_pairs(teacher, student, 3) == [(1, 1), (2, 4), (3, 5)]
    many = propose_layer_pairs(teacher, student, 10)
    assert len(many) == 3 and all(1 <= s <= 3 and 1 <= t <= 6 for s, t in many)
    assert propose_layer_pairs(teacher, None, 2) == [(4, 4), (5, 5)]


def test_mirror_correlation(half_identity: SpectrumResult) -> None:
    assert mirror_correlation(half_identity, half_identity) == pytest.approx(1.0)
    line = SpectrumResult(torch.ones(3, 4), torch.tensor([1.0, 2.0, 3.0]), torch.ones(3), "a")
    longer = SpectrumResult(torch.ones(5, 4), torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0]), torch.ones(5), "b")
    assert mirror_correlation(line, longer) == pytest.approx(-1.0)  # linear resampling of a line is exact


def test_plots(half_identity: SpectrumResult, tmp_path: Path) -> None:
    other = SpectrumResult(torch.rand(3, 4), torch.rand(3), torch.rand(3), "vit-nano")
    paths = save_spectrum_plots([half_identity, other], tmp_path)
    names = sorted(p.name for p in paths)
    assert names == ["spectrum_bands.png", "spectrum_intensity.png", "spectrum_vit-nano-2.csv", "spectrum_vit-nano.csv"]
    assert all(p.stat().st_size > 0 for p in paths)
    rows = (tmp_path / "spectrum_vit-nano.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[0].startswith("block,relative_depth,layer_intensity,channel_intensity,band_0")
