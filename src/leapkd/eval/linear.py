"""Linear probe on frozen features: one linear layer trained with SGD (docs/method.md, section 3).

The layer is trained by `leapkd.linear_classifier.train_linear` (standardised features).
The learning rate is chosen on a seeded held-out part of the training split, then the
layer is retrained on the whole training split and scored on the validation split.
Everything runs on the CPU from seeded generators, so results are reproducible.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from leapkd.eval.protocol import EvalContext, Protocol, accuracy_rows, register_protocol
from leapkd.linear_classifier import linear_logits, train_linear
from leapkd.metrics import top_accuracy

DEFAULT_LRS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)


def linear_probe(
    train_feats: Tensor,
    train_labels: Tensor,
    val_feats: Tensor,
    val_labels: Tensor,
    lrs: tuple[float, ...] = DEFAULT_LRS,
    epochs: int = 100,
    batch_size: int = 256,
    seed: int = 0,
    holdout: float = 0.2,
    num_classes: int | None = None,
) -> dict:
    """Validation accuracy of a linear classifier on frozen (N, D) features.

    Each lr in `lrs` is trained on a seeded (1 - holdout) part of the training split and
    scored on the rest; the best (highest held-out top-1, ties broken by lower held-out
    cross-entropy, then by order in `lrs`) is retrained on the whole training split.
    Returns {"top1", "best_lr", "holdout_top1_by_lr"} plus "top5" with >= 5 classes;
    accuracies are fractions in [0, 1].
    """
    x, y = train_feats.detach().float().cpu(), train_labels.detach().long().cpu()
    vx, vy = val_feats.detach().float().cpu(), val_labels.detach().long().cpu()
    if x.ndim != 2 or vx.ndim != 2 or x.shape[1] != vx.shape[1]:
        raise ValueError(f"features must be (N, D) and (M, D), got {tuple(x.shape)} and {tuple(vx.shape)}")
    if y.shape != (x.shape[0],) or vy.shape != (vx.shape[0],) or vx.shape[0] == 0:
        raise ValueError(f"need one label per sample and a non-empty val split, got {tuple(y.shape)} {tuple(vy.shape)}")
    n_hold = round(holdout * x.shape[0])
    if not lrs or any(lr <= 0 for lr in lrs) or epochs < 1 or batch_size < 1:
        raise ValueError(f"need positive lrs, epochs >= 1, batch_size >= 1 (got {lrs}, {epochs}, {batch_size})")
    if not 0 < holdout < 1 or n_hold < 1 or n_hold >= x.shape[0]:
        raise ValueError(f"holdout {holdout} must leave at least one sample on each side of {x.shape[0]}")
    classes = num_classes if num_classes is not None else int(max(y.max(), vy.max())) + 1
    if min(y.min(), vy.min()) < 0 or max(y.max(), vy.max()) >= classes:
        raise ValueError(f"labels must lie in 0..{classes - 1}")

    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    hold, fit = perm[:n_hold], perm[n_hold:]
    by_lr: dict[float, float] = {}
    best_key, best_lr = None, lrs[0]
    sweep = train_linear(x[fit], y[fit], classes, torch.tensor(lrs, dtype=torch.float32), epochs, batch_size, seed)
    for lr, logits in zip(lrs, linear_logits(sweep, x[hold])):
        acc = (logits.argmax(1) == y[hold]).float().mean().item()
        loss = F.cross_entropy(logits, y[hold]).item()
        by_lr[lr] = acc
        key = (acc, -loss if math.isfinite(loss) else -math.inf)
        if best_key is None or key > best_key:
            best_key, best_lr = key, lr

    logits = linear_logits(train_linear(x, y, classes, torch.tensor([best_lr]), epochs, batch_size, seed), vx)[0]
    return {**top_accuracy(logits, vy), "best_lr": best_lr, "holdout_top1_by_lr": by_lr}


@register_protocol("linear")
class LinearProbeProtocol(Protocol):
    """Linear-probe accuracy on the validation split, trained on the training split."""

    headline = True

    def run(self, ctx: EvalContext) -> dict[str, Any]:
        return linear_probe(*ctx.train_and_val(), seed=ctx.seed)

    def rows(self, result: dict[str, Any]) -> list[tuple[str, str]]:
        return accuracy_rows("linear probe", result)
