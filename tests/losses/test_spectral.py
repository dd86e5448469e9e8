"""SpectralKD loss: values, identities with the spatial MSE, pooling, shapes, errors."""

import pytest
import torch
import torch.nn.functional as F

from leapkd.errors import LeapkdError
from leapkd.losses import spectral_loss, spectral_pairs_loss, tokens_to_map
from leapkd.models import Features


def test_zero_for_identical_and_symmetric() -> None:
    a, b = torch.randn(2, 8, 4, 6), torch.randn(2, 8, 4, 6)
    assert spectral_loss(a, a.clone()) == 0
    assert torch.allclose(spectral_loss(a, b), spectral_loss(b, a))


def test_parseval_identities() -> None:
    """Exact relations between the spectral loss and the spatial difference d = a - b.

    Full fft2 (ortho) is unitary: sum |F(d)|² = sum d². Stacking (real, imag) doubles the
    element count, so MSE over the stacked full spectrum = spatial MSE / 2.

    rfft2 stores only columns kx = 0..W//2 of the Hermitian spectrum. Column kx stands for
    itself and its mirror W - kx, except kx = 0 and (W even) kx = W/2, which are their own
    mirrors. So sum_kx m(kx) * |R(d)[.., kx]|² = sum d² with m = 1 for those self-mirrored
    columns and 2 otherwise, while spectral_loss = sum |R(d)|² / (2 * B*C*H*(W//2+1)).
    """
    for w in (6, 7):  # even and odd width
        a, b = torch.randn(2, 3, 5, w, dtype=torch.float64), torch.randn(2, 3, 5, w, dtype=torch.float64)
        d = a - b
        full = torch.fft.fft2(d, norm="ortho")
        assert torch.allclose(torch.view_as_real(full).pow(2).mean(), F.mse_loss(a, b) / 2)

        loss = spectral_loss(a, b).double()
        r = torch.fft.rfft2(d, norm="ortho")
        stored = r.abs().pow(2)
        assert torch.allclose(loss, stored.sum() / (2 * stored.numel()), rtol=1e-5)
        mult = torch.full((w // 2 + 1,), 2.0, dtype=torch.float64)
        mult[0] = 1
        if w % 2 == 0:
            mult[-1] = 1
        assert torch.allclose((stored * mult).sum(), d.pow(2).sum())


def test_the_wider_side_is_pooled_down() -> None:
    s, t = torch.randn(2, 4, 3, 3), torch.randn(2, 12, 3, 3)
    pooled = t.reshape(2, 4, 3, 3, 3).mean(dim=2)  # 12 -> 4 channels: mean of each group of 3
    assert torch.allclose(spectral_loss(s, t), spectral_loss(s, pooled))  # the paper: the teacher pooled
    assert torch.allclose(spectral_loss(t, s), spectral_loss(pooled, s))  # a wider student (a CNN stage) too


def test_tokens_equal_maps_and_pairs() -> None:
    ms, mt = torch.randn(2, 4, 3, 5), torch.randn(2, 8, 3, 5)
    ts, tt = ms.flatten(2).transpose(1, 2), mt.flatten(2).transpose(1, 2)  # (B, N, C), row-major
    assert torch.equal(tokens_to_map(ts, (3, 5)), ms)
    assert torch.allclose(spectral_loss([ts, ts], [tt, tt], grid=(3, 5)), spectral_loss(ms, mt))
    cls = torch.randn(2, 1, 8)
    student, teacher = Features(ts, (3, 5)), Features(tt, (3, 5), cls)  # the prefix is not part of a map
    pairs = spectral_pairs_loss({1: student, 2: student}, {3: teacher}, [(1, 3), (2, 3)])
    assert torch.allclose(pairs, spectral_loss(ms, mt))


def test_pairs_on_different_grids_resample_the_student() -> None:
    s, t = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 3, 3)
    resampled = F.interpolate(s, size=(3, 3), mode="bilinear", align_corners=False)
    got = spectral_pairs_loss({1: Features.from_map(s)}, {1: Features.from_map(t)}, [(1, 1)])
    assert torch.allclose(got, spectral_loss(resampled, t))


def test_errors() -> None:
    tokens = torch.randn(2, 15, 4)
    with pytest.raises(LeapkdError, match="do not fill a 4x4 grid"):
        spectral_loss(tokens, tokens, grid=(4, 4))
    with pytest.raises(LeapkdError, match="no grid"):
        spectral_loss(tokens, tokens)
    with pytest.raises(LeapkdError, match=r"\(3, 5\).*\(5, 3\)"):
        spectral_loss(torch.randn(1, 4, 3, 5), torch.randn(1, 4, 5, 3))


def test_computed_in_float32() -> None:
    a, b = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    low = spectral_loss(a.bfloat16(), b.bfloat16())
    assert low.dtype == torch.float32
    assert torch.allclose(low, spectral_loss(a.bfloat16().float(), b.bfloat16().float()))


def test_gradient_flows() -> None:
    s = torch.randn(2, 4, 3, 3, requires_grad=True)
    t = torch.randn(2, 8, 3, 3)
    spectral_loss(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
