"""The run's optimizer: AdamW (the default) or LARS (the LEAP reference's), and its parameter groups.

LARS is timm's `Lars`: the update of a weight matrix is scaled by its trust ratio
`trust * |w| / (|g| + wd * |w| + eps)` (weight decay included), then SGD momentum. As in
the reference (lightly's LARS), one-dimensional parameters (norms, biases) get neither
the trust ratio nor weight decay.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.optim import Lars
from torch import nn

from leapkd.config import DistillConfig

LARS_EPS = 1e-8


def build_optimizer(
    cfg: DistillConfig, modules: tuple[nn.Module, ...], lr: float, fused: bool
) -> torch.optim.Optimizer:
    """`cfg.optimizer` over the trainable parameters of `modules` at peak LR `lr` (`fused`: AdamW's
    one-kernel step)."""
    if cfg.optimizer == "lars":
        return Lars(lars_groups(modules, cfg.weight_decay), lr=lr, momentum=cfg.momentum,
                    trust_coeff=cfg.lars_trust_coefficient, eps=LARS_EPS)  # fmt: skip
    return torch.optim.AdamW(weight_decay_groups(modules, cfg.weight_decay), lr=lr, fused=fused)


def scaled_lr(cfg: DistillConfig, global_batch: int) -> float:
    """The peak LR: `lr` as given, or scaled by global_batch / lr_reference_batch (linearly or
    by its square root)."""
    ratio = global_batch / cfg.lr_reference_batch
    return cfg.lr * {"none": 1.0, "linear": ratio, "sqrt": ratio**0.5}[cfg.lr_scale]


def weight_decay_groups(modules: tuple[nn.Module, ...], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on weight matrices, none on norms, biases, tokens, pos_embed."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in modules:
        for name, p in module.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or "token" in name or "pos_embed" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lars_groups(modules: tuple[nn.Module, ...], weight_decay: float) -> list[dict[str, Any]]:
    """LARS groups: every parameter of more than one dimension is adapted and decayed, the others neither."""
    params = [p for module in modules for p in module.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim != 1], "weight_decay": weight_decay, "always_adapt": True},
        {"params": [p for p in params if p.ndim == 1], "weight_decay": 0.0, "always_adapt": False},
    ]
