"""Linear probe on frozen features: one linear layer trained with SGD (SPEC section 3).

Features are standardised with the mean and std of the samples the layer is trained on.
The learning rate is chosen on a seeded held-out part of the training split, then the
layer is retrained on the whole training split and scored on the validation split.
Everything runs on the CPU from seeded generators, so results are reproducible.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_LRS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)


def _train(
    x: Tensor, y: Tensor, classes: int, lrs: Tensor, epochs: int, batch_size: int, seed: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(weights (L, D, C), biases (L, C), mean, std), one linear layer per lr, trained at once.

    Minibatch SGD on the softmax cross-entropy, momentum 0.9, no weight decay, lr decayed per
    step by a cosine to 0 (as torch's SGD + CosineAnnealingLR); gradients are computed in
    closed form, which is much faster than autograd for a single layer.
    """
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the same draws on every device
    device = x.device
    lrs = lrs.to(device)
    mean, std = x.mean(dim=0), x.std(dim=0, unbiased=False).clamp(min=1e-6)
    x = (x - mean) / std
    n, dim = x.shape
    weight = (torch.randn(dim, classes, generator=gen) * 0.01).to(device).expand(len(lrs), dim, classes).clone()
    bias = torch.zeros(len(lrs), classes, device=device)
    mom_w, mom_b = torch.zeros_like(weight), torch.zeros_like(bias)
    onehot = F.one_hot(y, classes).float()
    batch_size = min(batch_size, n)
    total, step = epochs * math.ceil(n / batch_size), 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            xb = x[idx]
            grad = ((xb @ weight + bias[:, None]).softmax(dim=-1) - onehot[idx]) / len(idx)  # (L, B, C)
            mom_w.mul_(0.9).add_(xb.T @ grad)
            mom_b.mul_(0.9).add_(grad.sum(dim=1))
            lr = (lrs * (0.5 * (1 + math.cos(math.pi * step / total))))[:, None]
            weight.sub_(lr[:, :, None] * mom_w)
            bias.sub_(lr * mom_b)
            step += 1
    return weight, bias, mean, std


def _logits(model: tuple[Tensor, Tensor, Tensor, Tensor], x: Tensor) -> Tensor:
    weight, bias, mean, std = model
    return ((x - mean) / std) @ weight + bias[:, None]  # (L, M, C)


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
    sweep = _train(x[fit], y[fit], classes, torch.tensor(lrs, dtype=torch.float32), epochs, batch_size, seed)
    for lr, logits in zip(lrs, _logits(sweep, x[hold])):
        acc = (logits.argmax(1) == y[hold]).float().mean().item()
        loss = F.cross_entropy(logits, y[hold]).item()
        by_lr[lr] = acc
        key = (acc, -loss if math.isfinite(loss) else -math.inf)
        if best_key is None or key > best_key:
            best_key, best_lr = key, lr

    logits = _logits(_train(x, y, classes, torch.tensor([best_lr]), epochs, batch_size, seed), vx)[0]
    ranked = logits.topk(min(5, classes), dim=1).indices
    result = {"top1": (ranked[:, 0] == vy).float().mean().item()}
    if classes >= 5:
        result["top5"] = (ranked == vy[:, None]).any(dim=1).float().mean().item()
    return {**result, "best_lr": best_lr, "holdout_top1_by_lr": by_lr}


def fit_linear_head(
    feats: Tensor, labels: Tensor, num_classes: int, lr: float = 0.1, epochs: int = 100, seed: int = 0
) -> torch.nn.Linear:
    """A linear classifier on frozen features, as one `nn.Linear` on the raw features.

    Trained like the probe (standardised features, SGD with momentum, cosine schedule) on
    the features' device; the standardisation is folded into the layer's weights, so it
    applies to raw features.
    """
    x, y = feats.detach().float(), labels.detach().long().to(feats.device)
    weight, bias, mean, std = _train(x, y, num_classes, torch.tensor([lr]), epochs, 256, seed)
    w = weight[0] / std[:, None]  # (D, C)
    layer = torch.nn.Linear(x.shape[1], num_classes, device=x.device)
    with torch.no_grad():
        layer.weight.copy_(w.T)
        layer.bias.copy_(bias[0] - mean @ w)
    return layer
