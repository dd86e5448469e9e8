"""SpectralKD alignment loss (docs/method.md, section 2).

For one (student, teacher) layer pair the feature maps are compared in the frequency
domain: the teacher's channel axis is adaptive-average-pooled down to the student's width
when the student is narrower (and, beyond the paper, the student's down to the teacher's
when the student is wider, e.g. a CNN stage), both maps get a 2-D real FFT over (H, W)
with orthonormal scaling in float32, and the loss is the MSE between the stacked (real,
imaginary) parts. Several pairs give the mean of the per-pair losses. The weight `w_fft`
is the caller's. Inside a method, a student map on another grid is first resampled
bilinearly to the teacher's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leapkd.errors import LeapkdError
from leapkd.models import Features

Maps = Tensor | Sequence[Tensor]


def tokens_to_map(tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    """Patch tokens (B, N, C) on a row-major (H, W) grid -> feature map (B, C, H, W)."""
    if tokens.dim() != 3:
        raise LeapkdError(f"expected patch tokens (B, N, C), got shape {tuple(tokens.shape)}")
    h, w = int(grid[0]), int(grid[1])
    b, n, c = tokens.shape
    if n != h * w:
        raise LeapkdError(
            f"{n} patch tokens do not fill a {h}x{w} grid ({h * w} cells)",
            "pass the token grid of these tokens, and drop prefix (CLS/register) tokens first",
        )
    return tokens.transpose(1, 2).reshape(b, c, h, w)


def _as_map(x: Tensor, grid: tuple[int, int] | None, who: str) -> Tensor:
    if x.dim() == 4:
        return x
    if x.dim() == 3:
        if grid is None:
            raise LeapkdError(f"{who} is tokens (B, N, C) but no grid was given", "pass grid=(H, W)")
        return tokens_to_map(x, grid)
    raise LeapkdError(f"{who} must be (B, C, H, W) or (B, N, C), got shape {tuple(x.shape)}")


def _pool_channels(x: Tensor, channels: int) -> Tensor:
    """Adaptive average pooling of the channel axis of (B, C, H, W) down to `channels`."""
    b, c, h, w = x.shape
    flat = x.permute(0, 2, 3, 1).reshape(b * h * w, 1, c)
    pooled = F.adaptive_avg_pool1d(flat, channels)
    return pooled.reshape(b, h, w, channels).permute(0, 3, 1, 2)


def _pair_loss(student: Tensor, teacher: Tensor, index: int) -> Tensor:
    cs, ct = student.shape[1], teacher.shape[1]
    if student.shape[-2:] != teacher.shape[-2:]:
        raise LeapkdError(
            f"pair {index}: student map is {tuple(student.shape[-2:])} but teacher map is "
            f"{tuple(teacher.shape[-2:])} (H, W)",
            "distill between models with the same token grid (same image size / patch size ratio)",
        )
    if student.shape[0] != teacher.shape[0]:
        raise LeapkdError(f"pair {index}: batch sizes differ ({student.shape[0]} vs {teacher.shape[0]})")
    with torch.autocast(device_type=student.device.type, enabled=False):
        s, t = student.float(), teacher.float()
        if cs < ct:
            t = _pool_channels(t, cs)
        elif cs > ct:
            s = _pool_channels(s, ct)
        fs = torch.fft.rfft2(s, dim=(-2, -1), norm="ortho")
        ft = torch.fft.rfft2(t, dim=(-2, -1), norm="ortho")
        # view_as_real is torch.stack([real, imag], -1) without the copy.
        return F.mse_loss(torch.view_as_real(fs), torch.view_as_real(ft))


def spectral_loss(student_maps: Maps, teacher_maps: Maps, grid: tuple[int, int] | None = None) -> Tensor:
    """Mean over layer pairs of the spectral MSE (unweighted; multiply by `w_fft`).

    Each argument is one tensor or a sequence (one per pair) of feature maps (B, C, H, W)
    or patch tokens (B, N, C); tokens need `grid=(H, W)` with N == H * W.
    """
    students = [student_maps] if isinstance(student_maps, Tensor) else list(student_maps)
    teachers = [teacher_maps] if isinstance(teacher_maps, Tensor) else list(teacher_maps)
    if not students or len(students) != len(teachers):
        raise LeapkdError(f"need matching non-empty layer lists, got {len(students)} student / {len(teachers)} teacher")
    losses = [
        _pair_loss(_as_map(s, grid, f"student map {i}"), _as_map(t, grid, f"teacher map {i}"), i)
        for i, (s, t) in enumerate(zip(students, teachers))
    ]
    return torch.stack(losses).mean()


def spectral_pairs_loss(
    student_by_level: Mapping[int, Features],
    teacher_by_level: Mapping[int, Features],
    pairs: Sequence[tuple[int, int]],
) -> Tensor:
    """`spectral_loss` over (student level, teacher level) pairs of features (prefix tokens
    are not part of a map); a student map on another grid is resampled to the teacher's."""
    missing = [(s, t) for s, t in pairs if s not in student_by_level or t not in teacher_by_level]
    if missing:
        raise LeapkdError(f"no features for layer pairs {missing}", "run forward_levels on every paired level")
    students = [student_by_level[s].resampled(teacher_by_level[t].grid).as_map() for s, t in pairs]
    teachers = [teacher_by_level[t].as_map() for _, t in pairs]
    return spectral_loss(students, teachers)


class SpectralLoss(nn.Module):
    """The spectral term of a method: `spectral_pairs_loss` over the pairs active this step."""

    name = "spectral"

    def forward(
        self,
        student_by_level: Mapping[int, Features],
        teacher_by_level: Mapping[int, Features],
        pairs: Sequence[tuple[int, int]],
    ) -> Tensor:
        return spectral_pairs_loss(student_by_level, teacher_by_level, pairs)
