import pytest
import torch

from leapkd.eval import linear_probe


def _blobs(n: int, seed: int, classes: int = 3, dim: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 3
    return centres[labels] + torch.randn(n, dim, generator=gen) + 5.0, labels  # offset: standardised away


def test_learns_separable_data_deterministically() -> None:
    x, y = _blobs(240, seed=0)
    vx, vy = _blobs(90, seed=1)
    first = linear_probe(x, y, vx, vy, lrs=(0.01, 0.1), epochs=20, batch_size=64)
    assert first["top1"] >= 0.98
    assert set(first["holdout_top1_by_lr"]) == {0.01, 0.1}
    assert first == linear_probe(x, y, vx, vy, lrs=(0.01, 0.1), epochs=20, batch_size=64)


def test_picks_a_learning_rate_that_learns() -> None:
    x, y = _blobs(150, seed=2, classes=5)
    res = linear_probe(x, y, x[:50], y[:50], lrs=(1e-7, 0.1), epochs=10, batch_size=32, seed=3)
    assert res["best_lr"] == 0.1
    assert res["holdout_top1_by_lr"][0.1] > res["holdout_top1_by_lr"][1e-7]
    assert res["top1"] >= 0.98 and "top5" in res


def test_bad_arguments_are_rejected() -> None:
    x, y = _blobs(10, seed=0)
    with pytest.raises(ValueError, match="holdout"):
        linear_probe(x, y, x, y, holdout=0.01)
    with pytest.raises(ValueError, match="features"):
        linear_probe(x, y, x[:, :3], y)
