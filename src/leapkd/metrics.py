"""Similarity metrics between feature sets: the LEAP progress metric and friends.

Both metrics take two feature tensors with the same number of rows, shaped (N, D) or
(B, P, D) (flattened to (B*P, D)), and return a 0-d float32 tensor. They run in float32
with autocast disabled whatever the input dtype; wrapping them in `torch.no_grad()` is
left to the caller (they are differentiable).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from leapkd.errors import LeapkdError, closest_names

Metric = Callable[[Tensor, Tensor], Tensor]

__all__ = ["METRICS", "Metric", "get_metric", "linear_cka", "mean_cosine", "top_accuracy"]


def _rows(t: Tensor, name: str) -> Tensor:
    """View (N, D) or (B, P, D) features as float32 rows (N, D)."""
    if t.dim() == 3:
        t = t.reshape(-1, t.shape[-1])
    elif t.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D) or (B, P, D), got {tuple(t.shape)}")
    return t.float()


def _centred_unit(x: Tensor) -> Tensor:
    """Columns centred, then scaled to unit Frobenius norm (all zeros if x is constant).

    Subtracting the first row before the mean does not change the centred result in exact
    arithmetic, but makes a constant input centre to exact zeros in floating point, and
    the scaling keeps the later D x D products far from float32 overflow/underflow.
    """
    x = x - x[:1]
    x = x - x.mean(dim=0, keepdim=True)
    norm = torch.linalg.vector_norm(x)
    return x / norm.clamp_min(torch.finfo(torch.float32).tiny)


def linear_cka(x: Tensor, y: Tensor) -> Tensor:
    """Linear CKA between features x (N, D1) and y (N, D2); (B, P, D) is flattened.

    Feature-space form, O(N * D1 * D2) time and no N x N matrix: with centred columns,
    ``||XᵀY||²_F / (||XᵀX||_F · ||YᵀY||_F)``. Returns a 0-d float32 tensor in [0, 1];
    0 when either input is constant (zero denominator). Invariant to orthogonal
    transforms and isotropic scaling of either input.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        xr, yr = _rows(x, "x"), _rows(y, "y")
        if xr.shape[0] != yr.shape[0]:
            raise ValueError(f"x and y must have the same number of rows, got {xr.shape[0]} and {yr.shape[0]}")
        xc, yc = _centred_unit(xr), _centred_unit(yr)
        cross = torch.linalg.matrix_norm(xc.T @ yc) ** 2
        denom = torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc)
        # After unit scaling the denominator is either >= 1/sqrt(D1*D2) or exactly 0.
        ok = denom > 1e-12
        cka = cross / denom.clamp_min(1e-12)
        return torch.where(ok, cka, torch.zeros_like(cka)).clamp(0.0, 1.0)


def mean_cosine(x: Tensor, y: Tensor) -> Tensor:
    """Mean row-wise cosine similarity of x and y, both (N, D) or (B, P, D) with equal shapes.

    Returns a 0-d float32 tensor in [-1, 1]; a zero row has cosine 0 with anything.
    """
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        xr, yr = _rows(x, "x"), _rows(y, "y")
        return torch.nn.functional.cosine_similarity(xr, yr, dim=-1, eps=1e-8).mean()


def top_accuracy(scores: Tensor, labels: Tensor) -> dict[str, float]:
    """Top-1 accuracy of class `scores` (N, C) against `labels` (N,), and top-5 when C >= 5."""
    classes = scores.shape[1]
    target = labels.long().to(scores.device)
    ranked = scores.topk(min(5, classes), dim=1).indices
    result = {"top1": (ranked[:, 0] == target).float().mean().item()}
    if classes >= 5:
        result["top5"] = (ranked == target[:, None]).any(dim=1).float().mean().item()
    return result


METRICS: dict[str, Metric] = {"cka": linear_cka, "cosine": mean_cosine}


def get_metric(name: str) -> Metric:
    """The metric registered under `name` in `METRICS`; LeapkdError if there is none."""
    try:
        return METRICS[name]
    except KeyError:
        close = closest_names(name, METRICS)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise LeapkdError(
            f"unknown progress metric {name!r}{hint}",
            fix=f"use one of: {', '.join(sorted(METRICS))}",
        ) from None
