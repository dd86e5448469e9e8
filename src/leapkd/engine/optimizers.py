"""The run's optimizer: AdamW (the default) or LARS (the LEAP reference's), its parameter groups
and its LR schedule.

LARS is timm's `Lars`: the update of a weight matrix is scaled by its trust ratio
`trust * |w| / (|g| + wd * |w| + eps)` (weight decay included), then SGD momentum. As in
the reference (LightlyTrain's no-weight-decay group under lightly's LARS), the parameters
that are not decayed (norms, biases, tokens, position embeddings) are not trust-scaled either.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning as L
import torch
from timm.optim import Lars, param_groups_weight_decay
from torch import nn
from torch.optim import Optimizer

from leapkd.config import DistillConfig
from leapkd.engine.accumulation import optimizer_steps, warmup_steps
from leapkd.methods.base import LrRestart
from leapkd.schedule import WarmupCosine

LARS_EPS = 1e-8


def build_optimizer(
    cfg: DistillConfig, modules: tuple[nn.Module, ...], lr: float, fused: bool
) -> torch.optim.Optimizer:
    """`cfg.optimizer` over the trainable parameters of `modules` at peak LR `lr` (`fused`: AdamW's
    one-kernel step)."""
    if cfg.optimizer == "lars":
        return Lars(
            lars_groups(modules, cfg.weight_decay),
            lr=lr,
            momentum=cfg.momentum,
            trust_coeff=cfg.lars_trust_coefficient,
            eps=LARS_EPS,
        )
    return torch.optim.AdamW(weight_decay_groups(modules, cfg.weight_decay), lr=lr, fused=fused)


def scaled_lr(cfg: DistillConfig, global_batch: int) -> float:
    """The peak LR: `lr` as given, or scaled by global_batch / lr_reference_batch (linearly or
    by its square root)."""
    ratio = global_batch / cfg.lr_reference_batch
    return cfg.lr * {"none": 1.0, "linear": ratio, "sqrt": ratio**0.5}[cfg.lr_scale]


def decay_split(modules: tuple[nn.Module, ...]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decayed, not decayed) trainable parameters, by timm's rule (`param_groups_weight_decay`):
    one-dimensional parameters, biases and what each model's own `no_weight_decay()` names
    (ViT's cls_token and pos_embed, Swin's relative position bias tables, ...) are not decayed."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in modules:
        for group in param_groups_weight_decay(module, 1.0, no_weight_decay_list=no_decay_names(module)):
            (decay if group["weight_decay"] else no_decay).extend(group["params"])
    return decay, no_decay


def no_decay_names(module: nn.Module) -> set[str]:
    """The parameter names the models inside `module` exclude from weight decay, as `module` names them."""
    names: set[str] = set()
    for prefix, sub in module.named_modules():
        if callable(getattr(sub, "no_weight_decay", None)):
            names |= {f"{prefix}.{name}" if prefix else name for name in sub.no_weight_decay()}
    return names


def weight_decay_groups(modules: tuple[nn.Module, ...], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on what timm decays (see `decay_split`), none on the rest."""
    decay, no_decay = decay_split(modules)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lars_groups(modules: tuple[nn.Module, ...], weight_decay: float) -> list[dict[str, Any]]:
    """LARS groups: the decayed parameters are also trust-scaled, the others neither (as LightlyTrain's
    no-weight-decay group, which holds norms, biases, cls_token and pos_embed)."""
    decay, no_decay = decay_split(modules)
    return [
        {"params": decay, "weight_decay": weight_decay, "always_adapt": True},
        {"params": no_decay, "weight_decay": 0.0, "always_adapt": False},
    ]


def build_schedule(trainer: L.Trainer, cfg: DistillConfig, optimizer: Optimizer, peak_lr: float) -> WarmupCosine:
    """The run's LR schedule: per step, or per epoch (`lr_interval`); absolute floor and warm-up
    start (`min_lr`, `warmup_lr`) become fractions of `peak_lr`."""
    total = optimizer_steps(trainer, cfg.accumulate_grad_batches)
    floor = cfg.min_lr_ratio if cfg.min_lr is None else min(1.0, cfg.min_lr / peak_lr)
    start = None if cfg.warmup_lr is None else min(1.0, cfg.warmup_lr / peak_lr)
    if cfg.lr_interval == "step":
        restarts: LrRestart | Literal["none"] = getattr(cfg, "lr_reset", "none")  # LEAP's, on its joined config
        style = getattr(cfg, "lr_restart_style", "leapkd")
        reference = restarts if style == "reference" and restarts != "none" else None
        return WarmupCosine(optimizer, total, warmup_steps(trainer, cfg), floor, start, reference_restarts=reference)
    per_epoch = max(1, int(trainer.num_training_batches) // cfg.accumulate_grad_batches)
    warmup = cfg.warmup_epochs if cfg.warmup_epochs is not None else cfg.warmup_steps / per_epoch
    return WarmupCosine(optimizer, total, math.ceil(warmup), floor, start, steps_per_epoch=per_epoch)
