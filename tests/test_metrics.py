"""Tests for leapkd.metrics: linear CKA (feature-space form) and mean cosine."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from leapkd.errors import LeapkdError
from leapkd.metrics import METRICS, get_metric, linear_cka, mean_cosine


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed))


def _orthogonal(d: int, seed: int = 1) -> torch.Tensor:
    q, _ = torch.linalg.qr(_randn(d, d, seed=seed))
    return q


def _cka_gram(x: torch.Tensor, y: torch.Tensor) -> float:
    """Reference: linear CKA through centred N x N Gram matrices (HSIC), in float64."""
    x, y = x.double(), y.double()
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, l_ = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    hsic = lambda a, b: (a * b).sum()  # noqa: E731  tr(A B) for symmetric A, B
    return float(hsic(k, l_) / torch.sqrt(hsic(k, k) * hsic(l_, l_)))


def _correlated(n: int = 256, d1: int = 16, d2: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x = _randn(n, d1, seed=seed)
    y = x[:, :d2] @ _randn(d2, d2, seed=seed + 1) + 0.5 * _randn(n, d2, seed=seed + 2)
    return x, y


def test_cka_identical_is_one() -> None:
    x = _randn(300, 10)
    assert linear_cka(x, x).item() == pytest.approx(1.0, abs=1e-6)


def test_cka_invariant_to_rotation_and_scaling() -> None:
    x, y = _correlated()
    ref = linear_cka(x, y).item()
    assert 0.05 < ref < 0.95
    assert linear_cka(x @ _orthogonal(16), y).item() == pytest.approx(ref, abs=1e-5)
    assert linear_cka(x, y @ _orthogonal(12, seed=5)).item() == pytest.approx(ref, abs=1e-5)
    assert linear_cka(7.5 * x, y).item() == pytest.approx(ref, abs=1e-5)
    assert linear_cka(x, 1e-3 * y).item() == pytest.approx(ref, abs=1e-5)
    assert linear_cka(x + 3.0, y - 10.0).item() == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cka_matches_gram_hsic_formula(seed: int) -> None:
    x, y = _correlated(n=128, d1=20, d2=7, seed=seed)
    assert linear_cka(x, y).item() == pytest.approx(_cka_gram(x, y), abs=1e-5)
    u, v = _randn(128, 9, seed=seed + 10), _randn(128, 30, seed=seed + 11)
    assert linear_cka(u, v).item() == pytest.approx(_cka_gram(u, v), abs=1e-5)


def test_cka_flattens_batch_patch_dim() -> None:
    x, y = _randn(4, 16, 8, seed=3), _randn(4, 16, 6, seed=4)
    assert linear_cka(x, y).item() == pytest.approx(linear_cka(x.reshape(64, 8), y.reshape(64, 6)).item(), abs=1e-7)
    assert linear_cka(x, y).item() == pytest.approx(_cka_gram(x.reshape(64, 8), y.reshape(64, 6)), abs=1e-5)


@pytest.mark.parametrize("value", [0.0, 0.1, 3.7, -1234.5])
def test_cka_constant_input_is_zero(value: float) -> None:
    const, y = torch.full((500, 8), value), _randn(500, 5)
    assert linear_cka(const, y).item() == 0.0
    assert linear_cka(y, const).item() == 0.0
    assert linear_cka(const, const).item() == 0.0


def test_cka_in_unit_interval() -> None:
    for seed in range(10):
        x, y = _correlated(n=64, d1=4 + seed, d2=3 + seed, seed=seed)
        for a, b in [(x, y), (x, x), (x, -x), (x, _randn(64, 3, seed=100 + seed))]:
            value = linear_cka(a, b).item()
            assert 0.0 <= value <= 1.0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_cka_returns_float32(dtype: torch.dtype) -> None:
    x, y = _correlated(n=64)
    out = linear_cka(x.to(dtype), y.to(dtype))
    assert out.dtype == torch.float32 and out.dim() == 0
    assert out.item() == pytest.approx(linear_cka(x, y).item(), abs=0.02 if dtype != torch.float64 else 1e-6)


def test_cka_ignores_autocast() -> None:
    x, y = _correlated(n=64)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = linear_cka(x, y)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(linear_cka(x, y).item(), abs=1e-6)


def test_cka_is_differentiable() -> None:
    x, y = _correlated(n=64)
    x.requires_grad_(True)
    linear_cka(x, y).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


class _ShapeRecorder(TorchDispatchMode):
    """Records the number of elements of every tensor produced by an aten op."""

    def __init__(self) -> None:
        super().__init__()
        self.numels: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        self.numels += [t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        return out


def test_cka_never_builds_n_by_n() -> None:
    n, d1, d2 = 2000, 8, 6
    x, y = _randn(n, d1), _randn(n, d2, seed=1)
    with _ShapeRecorder() as rec:
        linear_cka(x, y)
    assert rec.numels, "the dispatch mode recorded nothing"
    assert max(rec.numels) <= n * max(d1, d2)
    with _ShapeRecorder() as gram_rec:  # the recorder does see an N x N implementation
        _cka_gram(x[:100], y[:100])
    assert max(gram_rec.numels) == 100 * 100


def test_cka_large_n_runs() -> None:
    x, y = _randn(200_000, 8), _randn(200_000, 8, seed=1)
    assert 0.0 <= linear_cka(x, y).item() < 0.01


def test_cka_rejects_mismatched_rows_and_bad_rank() -> None:
    with pytest.raises(ValueError, match="rows"):
        linear_cka(_randn(10, 3), _randn(11, 3))
    with pytest.raises(ValueError, match="shape"):
        linear_cka(_randn(10), _randn(10))


def test_cosine_identical_negated_and_range() -> None:
    x = _randn(2, 9, 7)
    assert mean_cosine(x, x).item() == pytest.approx(1.0, abs=1e-6)
    assert mean_cosine(x, -x).item() == pytest.approx(-1.0, abs=1e-6)
    assert mean_cosine(x, 3.0 * x).item() == pytest.approx(1.0, abs=1e-6)
    value = mean_cosine(x, _randn(2, 9, 7, seed=1)).item()
    assert -1.0 <= value <= 1.0
    assert mean_cosine(x.bfloat16(), x.bfloat16()).dtype == torch.float32


def test_cosine_requires_same_shape() -> None:
    with pytest.raises(ValueError, match="same shape"):
        mean_cosine(_randn(4, 3), _randn(4, 5))


def test_metric_registry() -> None:
    assert METRICS == {"cka": linear_cka, "cosine": mean_cosine}
    assert get_metric("cka") is linear_cka and get_metric("cosine") is mean_cosine
    with pytest.raises(LeapkdError, match="cka") as info:
        get_metric("ckaa")
    assert info.value.fix is not None and "cosine" in info.value.fix
